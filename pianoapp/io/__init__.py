"""Reading, validating, writing, rendering and transcribing music files."""
