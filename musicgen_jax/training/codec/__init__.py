"""Training EnCodec with the project's trainer: ``python train.py codec --config configs/codec/<name>.yaml``.

:mod:`.config` (the typed config), :mod:`.data` (audio segments), :mod:`.params` (weight norm),
:mod:`.spectral` (STFT and mel loss), :mod:`.quantizer` (EMA k-means codebooks),
:mod:`.discriminator` (multi-scale STFT), :mod:`.step` (train and eval steps), :mod:`.trainer`
(the loop), :mod:`.export` (a run to a transformers ``EncodecModel`` directory), :mod:`.report`
(reconstruction figures on held-out clips).
"""
