"""The chaos suite: the run's promises under faults, bad input and intruders."""
