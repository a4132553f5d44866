"""Data sources, readers and the trial manifest."""
