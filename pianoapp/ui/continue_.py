"""Continue: the piano language model plays on from the opening you give it."""

from pianoapp.ui.components import availability_notice, explain, file_preview


def build() -> None:
    explain("Give the opening of a piece as MIDI or a score; the piano model plays on from where it stops.")
    availability_notice("continue")
    file_preview("Opening (MIDI or score)", "midi")
