"""Format readers: one module per format, each declaring READER (sniff, open, verify, state_directory hooks)."""
