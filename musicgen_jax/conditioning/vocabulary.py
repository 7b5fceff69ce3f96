"""The attribute vocabularies: the genres, moods and instruments the product accepts.

Meta's checkpoints learned these words from free text (audiocraft appended ``genre: ...`` style
metadata to descriptions during training), so the lists follow the tags of the music metadata that
training data carries. Models trained by this project may also learn an embedding per entry; the
index of a word in its tuple is its embedding row (row 0 is reserved for "no value").
"""

GENRES: tuple[str, ...] = (
    "acoustic", "afrobeat", "ambient", "blues", "bossa nova", "classical", "country", "dance",
    "disco", "drum and bass", "dubstep", "edm", "electronic", "folk", "funk", "gospel", "grunge",
    "hip hop", "house", "indie", "industrial", "jazz", "k-pop", "latin", "lofi", "metal",
    "orchestral", "pop", "punk", "r&b", "reggae", "reggaeton", "rock", "salsa", "soul",
    "soundtrack", "synthwave", "techno", "trance", "trap", "world",
)

MOODS: tuple[str, ...] = (
    "aggressive", "calm", "cheerful", "dark", "dramatic", "dreamy", "energetic", "epic",
    "happy", "hopeful", "intense", "melancholic", "mysterious", "nostalgic", "peaceful",
    "playful", "relaxed", "romantic", "sad", "serious", "sentimental", "smooth", "tense",
    "uplifting", "upbeat", "warm",
)

INSTRUMENTS: tuple[str, ...] = (
    "accordion", "acoustic guitar", "banjo", "bass", "bass guitar", "bells", "brass", "cello",
    "choir", "clarinet", "drums", "electric guitar", "electric piano", "flute", "guitar", "harp",
    "harpsichord", "horns", "mandolin", "marimba", "organ", "pad", "percussion", "piano",
    "plucked strings", "saxophone", "sitar", "strings", "synth", "synth bass", "synthesizer",
    "trombone", "trumpet", "ukulele", "upright bass", "violin", "vocals", "xylophone",
)

# Musical keys as audiocraft metadata writes them ("C major", "A minor", ...).
KEYS: tuple[str, ...] = tuple(
    f"{note} {mode}"
    for mode in ("major", "minor")
    for note in ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")
)

TEMPO_RANGE: tuple[float, float] = (20.0, 300.0)  # beats per minute
DURATION_RANGE: tuple[float, float] = (1.0, 120.0)  # seconds
