"""Where observations come from: activity logs and cameras."""
