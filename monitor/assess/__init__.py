"""Assessment: a window in, a validated verdict out.

`verdict` (the Assessment schema, Verdict, severities, hazard matching), `prompt`
(observations as quoted data), `keyframes` (which frames a model sees), `single`
(one call per window) and `strategies` (vote, verify, temporal), with their
configuration in `settings`.
"""
