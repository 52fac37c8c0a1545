"""`anatomodel prepare`: registered on the app by this module (being written)."""
