"""Encoders that learn from the loaded images: PCA of pixels, a convolutional autoencoder, and a
triplet-loss projection head on top of another encoder's stored vectors.

Each `clipsql train KIND` writes the model's state to `<data-dir>/models/<slug>/` (a
`manifest.json` that says what it is, plus weights) and its vectors for the photos it saw as
embedding parts, so `clipsql load` and `search` treat it like any other model, and later
`embed`/`search --image` reload the state to encode new images.
"""
