"""The serving benchmark (``make bench``): enginehouse against its baselines, measured in one run."""
