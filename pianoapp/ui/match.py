"""Match: which indexed piece does this recording or MIDI file come from, and where in it."""

from pianoapp.ui.components import availability_notice, explain, file_preview


def build() -> None:
    explain("Upload a recording or a MIDI file to find the piece it comes from and the moment it starts.")
    availability_notice("match")
    file_preview("Recording, MIDI or score", "audio", "midi")
