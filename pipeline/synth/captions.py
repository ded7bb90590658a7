"""Alt texts for the synthetic crawl: varied natural captions, and the noise of the real web.

Every function takes the caller's ``random.Random`` so a page's texts are a pure function
of the crawl seed and the page number.
"""

from __future__ import annotations

import random

from pipeline.synth.world import ImageSpec

BACKGROUND_WORDS = {
    "plain": ("plain", "solid", "plain white"),
    "striped": ("striped", "stripy", "lined"),
    "checkered": ("checkered", "checkerboard", "chequered"),
    "dotted": ("dotted", "polka-dot", "spotted"),
    "gradient": ("gradient", "fading", "shaded"),
    "grid": ("grid", "graph-paper", "squared"),
}
PLACEMENT_PHRASES = {
    "top left": ("in the top left corner", "at the top left", "top left"),
    "top": ("at the top", "near the top edge", "top centre"),
    "top right": ("in the top right corner", "at the top right", "top right"),
    "left": ("on the left", "at the left side", "left"),
    "centre": ("in the centre", "in the middle", "centred"),
    "right": ("on the right", "at the right side", "right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "bottom left"),
    "bottom": ("at the bottom", "near the bottom edge", "bottom centre"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "bottom right"),
}

EN_TEMPLATES = (
    "{a_size} {size} {colour} {shape} on {a_bg} {bg} background",
    "photo: {colour} {shape}, {where_short}",
    "{Colour} {shape} ({size}) - {bg} bg",
    "{a_colour} {colour} {shape} {where}",
    "stock illustration of {a_size} {size} {colour} {shape}",
    "{colour} {shape} icon on {bg} pattern",
    "close-up of {a_colour} {colour} {shape} against {a_bg} {bg} backdrop",
    "The {shape} is {colour} and sits {where}.",
    "{size} {shape}, {colour}, {bg} pattern",
    "Clipart: {colour} {shape} on {bg}",
    "{shape} shape in {colour}",
    "Buy {size} {colour} {shape} sticker | Free shipping",
    "{colour} {shape}",
    "{A_size} {size}, {colour} {shape} drawn {where} on {a_bg} {bg} background.",
    "Wallpaper with {a_colour} {colour} {shape} {where}",
    "{shape}, {colour}; {bg} background; {where_short}",
)

# Other languages: (shape words, colour words, background words, placement words, templates).
FOREIGN = {
    "de": (
        ("Kreis", "Quadrat", "Dreieck", "Stern", "Sechseck", "Raute", "Kreuz", "Herz"),
        ("rot", "orange", "gelb", "grün", "türkis", "blau", "lila", "rosa"),
        {"plain": "einfarbigem", "striped": "gestreiftem", "checkered": "kariertem",
         "dotted": "gepunktetem", "gradient": "verlaufendem", "grid": "gerastertem"},
        ("oben links", "oben", "oben rechts", "links", "in der Mitte", "rechts",
         "unten links", "unten", "unten rechts"),
        ("Ein Bild mit einem {colour}en {shape} auf {bg} Hintergrund, {where}",
         "Foto: das {shape} ist {colour} und befindet sich {where}",
         "Hier sehen Sie ein {shape} in der Farbe {colour} auf einem {bg} Hintergrund"),
    ),
    "fr": (
        ("cercle", "carré", "triangle", "étoile", "hexagone", "losange", "croix", "cœur"),
        ("rouge", "orange", "jaune", "vert", "cyan", "bleu", "violet", "rose"),
        {"plain": "uni", "striped": "rayé", "checkered": "à carreaux", "dotted": "à pois",
         "gradient": "dégradé", "grid": "quadrillé"},
        ("en haut à gauche", "en haut", "en haut à droite", "à gauche", "au centre",
         "à droite", "en bas à gauche", "en bas", "en bas à droite"),
        ("Une image d'un {shape} {colour} sur un fond {bg}, {where}",
         "Photo : le {shape} de couleur {colour} se trouve {where}",
         "Voici un joli {shape} {colour} avec un fond {bg} pour votre page"),
    ),
    "es": (
        ("círculo", "cuadrado", "triángulo", "estrella", "hexágono", "rombo", "cruz", "corazón"),
        ("rojo", "naranja", "amarillo", "verde", "cian", "azul", "morado", "rosa"),
        {"plain": "liso", "striped": "de rayas", "checkered": "de cuadros", "dotted": "de lunares",
         "gradient": "degradado", "grid": "cuadriculado"},
        ("arriba a la izquierda", "arriba", "arriba a la derecha", "a la izquierda",
         "en el centro", "a la derecha", "abajo a la izquierda", "abajo", "abajo a la derecha"),
        ("Una imagen de un {shape} {colour} sobre un fondo {bg}, {where}",
         "Foto: el {shape} de color {colour} está {where}",
         "Aquí puedes ver un {shape} de color {colour} con un fondo {bg} para tu web"),
    ),
    "it": (
        ("cerchio", "quadrato", "triangolo", "stella", "esagono", "rombo", "croce", "cuore"),
        ("rosso", "arancione", "giallo", "verde", "ciano", "blu", "viola", "rosa"),
        {"plain": "tinta unita", "striped": "a righe", "checkered": "a quadretti",
         "dotted": "a pois", "gradient": "sfumato", "grid": "a griglia"},
        ("in alto a sinistra", "in alto", "in alto a destra", "a sinistra", "al centro",
         "a destra", "in basso a sinistra", "in basso", "in basso a destra"),
        ("Un'immagine di un {shape} {colour} su uno sfondo {bg}, {where}",
         "Foto: il {shape} di colore {colour} si trova {where}",
         "Ecco un bel {shape} di colore {colour} con uno sfondo {bg} per il tuo sito"),
    ),
}

BOILERPLATE = (
    "image", "Image", "photo", "picture", "thumbnail", "logo", "spacer", "click here",
    "banner", "untitled", "img", "placeholder", "icon", "photo photo", "IMAGE",
)
SPAM_WORDS = (
    "best", "cheap", "free", "download", "hd", "wallpaper", "4k", "sale", "top", "new",
    "shapes", "colours", "vector", "clipart", "png", "design", "art", "print", "poster",
)
MOJIBAKE_DECORATIONS = (
    ("{c} – café style", "–"),
    ("Anna’s {c}", "’"),
    ("‘{c}’", "‘"),
    ("{c} × 2", "×"),
    ("{c} · déjà vu", "é"),
)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def english(spec: ImageSpec, rng: random.Random) -> str:
    """A natural English caption for the spec, from one of the templates."""
    colour, shape, size = spec.colour_name, spec.shape_name, spec.size_name
    bg = rng.choice(BACKGROUND_WORDS[spec.background_name])
    where = rng.choice(PLACEMENT_PHRASES[spec.placement_name])
    text = rng.choice(EN_TEMPLATES).format(
        colour=colour, Colour=colour.capitalize(), shape=shape, size=size, bg=bg,
        where=where, where_short=spec.placement_name,
        a_size=_article(size), A_size=_article(size).capitalize(),
        a_colour=_article(colour), a_bg=_article(bg),
    )
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def foreign(spec: ImageSpec, rng: random.Random) -> tuple[str, str]:
    """(language code, caption) in a language other than English."""
    lang = rng.choice(sorted(FOREIGN))
    shapes, colours, bgs, places, templates = FOREIGN[lang]
    text = rng.choice(templates).format(
        shape=shapes[spec.shape], colour=colours[spec.colour], bg=bgs[spec.background_name],
        where=places[spec.placement],
    )
    return lang, text


def mojibake(clean: str, rng: random.Random) -> tuple[str, str]:
    """(clean text with a non-ASCII character, the same text mis-decoded as cp1252)."""
    pattern, _ = rng.choice(MOJIBAKE_DECORATIONS)
    fixed = pattern.format(c=clean)
    return fixed, fixed.encode("utf-8").decode("cp1252")


def boilerplate(rng: random.Random) -> str:
    return rng.choice(BOILERPLATE)


def filename(rng: random.Random) -> str:
    n = rng.randrange(10000)
    return rng.choice((
        f"IMG_{n:04d}.jpg", f"DSC{n:05d}.JPG", f"photo-{n}.png", f"banner_final_v{n % 7}.png",
        f"Screenshot 2026-0{1 + n % 9}-1{n % 10} at 1{n % 10}.2{n % 6}.png",
        f"{rng.getrandbits(32):08x}.jpg", f"image{n % 1000:03d}.gif", f"P{n:07d}.JPG",
    ))


def long_alt(clean: str, rng: random.Random, length: int) -> str:
    """The caption followed by keyword stuffing up to ``length`` characters."""
    parts = [clean]
    size = len(clean)
    while size < length:
        w = rng.choice(SPAM_WORDS)
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)[:length]


def huge_alt(clean: str, length: int) -> str:
    """A caption padded to ``length`` characters (at least 1 MiB: the extract cap test)."""
    filler = " lorem ipsum dolor sit amet"
    reps = length // len(filler) + 1
    return (clean + filler * reps)[:length]
