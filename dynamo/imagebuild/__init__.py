"""Image builds: plans, container engines, progress and verification."""
