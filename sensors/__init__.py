"""Where observations come from: activity logs and cameras."""

from sensors.image_header import set_decoder_limit

# OpenCV reads its own pixel limit once, when it is loaded: set before any module here imports cv2. The
# header check (`sensors.image_header.check_image`) is the real bound; this is the second line.
set_decoder_limit()
