"""Training data: synthetic sets, tokenisation, grain pipelines and waveform augmentation."""
