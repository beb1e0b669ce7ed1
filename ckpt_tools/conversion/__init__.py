"""`convert`: plan (match and translate), slots (optimizer-state translation), run, verify, factory, atomic writes."""
