"""The only layer the UI and the CLI call. Services take paths and plain values, return plain results,
and raise `pianoapp.errors.PianoappError` for anything a user should read."""
