"""Networks built from string-keyed factories for norm, activation and initialization."""
