"""Models: plain nn.Modules, each with a config dataclass, built by name through `registry`."""

from pianoapp.models.arranger import Arranger, ArrangerConfig
from pianoapp.models.bind import Bind, BindConfig
from pianoapp.models.lm import LMConfig, PianoLM
from pianoapp.models.matcher import Matcher, MatcherConfig

# family name (the "family" field of a config JSON) -> (config dataclass, module class)
FAMILIES = {
    "lm": (LMConfig, PianoLM),
    "matcher": (MatcherConfig, Matcher),
    "arranger": (ArrangerConfig, Arranger),
    "bind": (BindConfig, Bind),
}
