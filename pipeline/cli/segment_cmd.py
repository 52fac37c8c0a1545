"""`anatomodel segment`: registered on the app by this module (being written)."""
