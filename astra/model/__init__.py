"""The ASTRA network: ``build_model(config.model, config.clips)`` returns an ``AstraModel``."""

from astra.model.astra import AstraModel, build_model, parameter_breakdown
from astra.model.audio import load_vggish_weights
from astra.model.audio_frontend import AudioFrontEnd

__all__ = ["AstraModel", "AudioFrontEnd", "build_model", "load_vggish_weights", "parameter_breakdown"]
