"""Command-line programs (imported as ``facegeo_apps``; each also runs as
``python apps/<name>.py``)."""
