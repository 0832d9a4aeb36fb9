"""The SoccerNet-v2 data layout: file names and rates fixed by the data (docs/data.md).

Defined once here, with no imports, so that the config, the data layer, inference and
the commands agree without importing each other.
"""

from __future__ import annotations

LABELS_FILENAME = "Labels-v2.json"  # <labels root>/<game>/Labels-v2.json
FEATURES_PATTERN = "{half}_baidu_soccer_embeddings.npy"  # <features root>/<game>/, formatted with half=1, 2
AUDIO_PATTERN = "audio{half}.npy"  # <audio root>/<game>/: [128, frames] mel power
AUDIO_FRAMES_PER_SECOND = 100  # mel frames per second in the audio files
NUM_MELS = 128  # mel bands in the audio files
HALVES: tuple[int, int] = (1, 2)  # every game has two halves, processed independently
# Mel power at 0 dB in the model's conversion to decibels (the authors' VGGish port); the
# simulator writes its loudest sounds near it.
AUDIO_REFERENCE_POWER = 7430.77
