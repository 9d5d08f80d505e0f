"""The Shapes world of docs/SHAPES_WORLD.md: scenes, references, questions and answers.

Pure Python + numpy. Everything random comes from the numpy.random.Generator passed in, so a seed
fixes a scene and its questions exactly.

Coordinates are picture units: x from 0 (left) to 1 (right), y from 0 (top) to 1 (bottom).
An object's centre (cx, cy) is the centre of its axis-aligned bounding box (w, h) as drawn, i.e.
after rotation. `angle` is in degrees, counter-clockwise on screen.

Choices the contract leaves open, made here once:
- "bounding box 10-16% / 24-32% of the side" holds for BOTH sides of the box.
- The triangle is equilateral, pointing up; the star is a regular five-pointed star (one point up).
- Placement keeps each centre 1.5% of the side away from the 3x3 grid lines and keeps the area
  centroid in the same cell as the box centre (they differ for triangles), so `where` answers do
  not depend on which centre a reader uses. Relations are asked only when both centres differ by
  >= 15% along the axis, for the same reason.
- Objects keep a gap of at least 1.2% of the side between them, 3% between two of one colour
  (they may nearly touch, but never merge into one blob after blur or JPEG).
- The description counts with a digit: "There are 3 shapes: ...".
- Two objects in the same grid cell are described in order of centre x, then centre y.
- References without the asked attribute: the colour family names the object by "{shape}" or, if
  that is not unique, "{size} {shape}"; the shape family by "{colour} object" or, if that is not
  unique, "{size} {colour} object". Questions needing more are not asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
SIZE_RANGE = {"small": (0.10, 0.16), "large": (0.24, 0.32)}
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITION_NAMES = tuple(p for row in POSITIONS for p in row)
ROTATABLE = ("square", "triangle", "star")
MAX_ANGLE = 15.0
# Regular pentagram: inner/outer radius = sin(18°)/sin(54°).
STAR_INNER = math.sin(math.radians(18)) / math.sin(math.radians(54))
BACKGROUND_LUMA = (80.0, 210.0)
RELATION_MIN = 0.15
OTHER_ANSWER = "I can only answer questions about the shapes in this picture."

FAMILIES = ("count", "exist", "colour", "shape", "size", "where", "relation", "describe", "other")

# Placement tolerances (see the module docstring).
GRID_MARGIN = 0.015
EDGE_MARGIN = 0.01
MIN_GAP = 0.012
# Two objects of one colour keep a wider gap: after blur or JPEG they would read as one blob.
SAME_COLOUR_GAP = 0.03


def luminance(rgb) -> float:
    """Rec. 601 luma, the luminance the contract's 80-210 range is read in."""
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


@dataclass
class Obj:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    w: float
    h: float
    angle: float = 0.0


@dataclass
class Background:
    """kind: "flat", "gradient" (colour -> colour2 along `angle`), "noise" (per-pixel, std
    `amplitude` levels) or "texture" (smooth blotches of feature size `scale` x side, amplitude
    `amplitude`). Renderers keep the deviation within 2 x amplitude, and sampling keeps
    colour +- 2 x amplitude inside the luminance range."""
    kind: str
    colour: tuple
    colour2: tuple | None = None
    angle: float = 0.0
    amplitude: float = 0.0
    scale: float = 0.0
    tone: str = "grey"


@dataclass
class Scene:
    background: Background
    objects: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Geometry

def _canonical(shape: str, star_inner: float = STAR_INNER, circle_points: int = 64) -> np.ndarray:
    """Unit outline centred on the shape's own centre, y up."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, circle_points, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if shape == "triangle":
        t = np.radians([90, 210, 330])
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        k = np.arange(10)
        t = np.radians(90 + 36 * k)
        r = np.where(k % 2 == 0, 1.0, star_inner)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    raise ValueError(f"unknown shape {shape!r}")


def _rotated(shape: str, angle: float, **kw) -> np.ndarray:
    """Canonical outline rotated about the shape's centre, in screen orientation (y down)."""
    p = _canonical(shape, **kw)
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    x = p[:, 0] * c - p[:, 1] * s
    y = p[:, 0] * s + p[:, 1] * c
    return np.stack([x, -y], 1)


def _box_aspect(shape: str, angle: float) -> tuple:
    p = _rotated(shape, angle)
    return float(np.ptp(p[:, 0])), float(np.ptp(p[:, 1]))


def outline(obj: Obj, star_inner: float = STAR_INNER, circle_points: int = 64) -> np.ndarray:
    """The object's outline in picture units (N x 2, x right, y down), scaled so its bounding box
    is exactly obj.w wide and centred on (obj.cx, obj.cy). The star's outer points fix its box, so
    any inner radius keeps the same box."""
    p = _rotated(obj.shape, obj.angle, star_inner=star_inner, circle_points=circle_points)
    lo, hi = p.min(0), p.max(0)
    scale = obj.w / (hi[0] - lo[0])
    p = (p - (lo + hi) / 2) * scale
    return p + np.array([obj.cx, obj.cy])


def hull(obj: Obj) -> np.ndarray:
    """Convex outline used for overlap tests: the star's outer pentagon, the circle as a polygon
    slightly larger than the circle so the test stays conservative."""
    if obj.shape == "star":
        return outline(obj)[0::2]
    if obj.shape == "circle":
        n = 48
        p = outline(obj, circle_points=n)
        c = np.array([obj.cx, obj.cy])
        return c + (p - c) / math.cos(math.pi / n)
    return outline(obj)


def centroid(obj: Obj) -> tuple:
    """Area centroid of the outline (differs from the box centre for triangles)."""
    p = outline(obj)
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    return float(((x + xn) * cross).sum() / (6 * a)), float(((y + yn) * cross).sum() / (6 * a))


def separation(p: np.ndarray, q: np.ndarray) -> float:
    """Largest gap between the projections of two convex polygons over their edge normals
    (separating axis test). Positive = disjoint, and the true distance is at least this value."""
    best = -np.inf
    for poly in (p, q):
        e = np.roll(poly, -1, axis=0) - poly
        n = np.stack([-e[:, 1], e[:, 0]], 1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        pp, qp = p @ n.T, q @ n.T
        gap = np.maximum(pp.min(0) - qp.max(0), qp.min(0) - pp.max(0))
        best = max(best, float(gap.max()))
    return best


def _cell_index(v: float) -> int:
    return 0 if v < 1 / 3 else (1 if v < 2 / 3 else 2)


def cell(obj: Obj) -> tuple:
    """(row, column) of the 3x3 grid cell holding the centre."""
    return _cell_index(obj.cy), _cell_index(obj.cx)


def position_of(obj: Obj) -> str:
    r, c = cell(obj)
    return POSITIONS[r][c]


# ----------------------------------------------------------------------------------------------
# Scene sampling

def _tone_colour(tone: str, luma: float, rng: np.random.Generator) -> tuple:
    """A grey, beige or pale blue-grey with the given luminance; tints stay small so no
    background reads as one of the object colours."""
    k = rng.uniform(0.5, 1.3)
    if tone == "grey":
        off = rng.uniform(-2, 2, 3)
    elif tone == "beige":
        off = np.array([14.0, 6.0, -16.0]) * k
    else:  # pale blue-grey
        off = np.array([-10.0, -2.0, 14.0]) * k
    rgb = luma + off
    rgb += luma - luminance(rgb)
    rgb = np.clip(np.round(rgb), 0, 255)
    return tuple(int(v) for v in rgb)


# Background colours keep at least this RGB distance from every nominal object colour (the pale
# end of the luminance range would otherwise come close to white).
MIN_BACKGROUND_DISTANCE = 65.0


def _far_from_objects(rgb) -> bool:
    return all(np.linalg.norm(np.subtract(rgb, c)) >= MIN_BACKGROUND_DISTANCE
               for c in COLOURS.values())


def sample_background(rng: np.random.Generator) -> Background:
    while True:
        bg = _sample_background(rng)
        if all(_far_from_objects(c) for c in (bg.colour, bg.colour2) if c is not None):
            return bg


def _sample_background(rng: np.random.Generator) -> Background:
    lo, hi = BACKGROUND_LUMA
    kind = str(rng.choice(["flat", "gradient", "noise", "texture"], p=[0.3, 0.3, 0.2, 0.2]))
    tone = str(rng.choice(["grey", "beige", "bluegrey"]))
    amp = 0.0
    scale = 0.0
    if kind == "noise":
        amp = float(rng.uniform(2, 8))
    elif kind == "texture":
        amp = float(rng.uniform(3, 10))
        scale = float(rng.uniform(0.02, 0.2))
    # Keep a level of slack so rounding never pushes a pixel out of range.
    m = 2 * amp + 1
    l1 = float(rng.uniform(lo + m, hi - m))
    c1 = _tone_colour(tone, l1, rng)
    c2 = None
    angle = 0.0
    if kind == "gradient":
        for _ in range(100):
            l2 = float(rng.uniform(lo + 1, hi - 1))
            if 15 <= abs(l2 - l1) <= 70:
                break
        tone2 = tone if rng.random() < 0.7 else str(rng.choice(["grey", "beige", "bluegrey"]))
        c2 = _tone_colour(tone2, l2, rng)
        angle = float(rng.uniform(0, 360))
    return Background(kind=kind, colour=c1, colour2=c2, angle=angle, amplitude=amp, scale=scale,
                      tone=tone)


def _attributes(n: int, rng: np.random.Generator) -> list:
    """Shape, colour and size per object. Starts independent, then often forces the cases that
    make references hard: one shape in several colours, one colour in several shapes, and a
    shape+colour pair in both sizes (so only the size tells them apart), sometimes an exact
    duplicate (which no reference can name)."""
    p_large = {1: 0.5, 2: 0.5, 3: 0.4, 4: 0.3, 5: 0.25, 6: 0.2}[n]
    objs = [[str(rng.choice(SHAPES)), str(rng.choice(COLOUR_NAMES)),
             "large" if rng.random() < p_large else "small"] for _ in range(n)]
    if n < 2:
        return objs
    idx = list(rng.permutation(n))
    if rng.random() < 0.3:  # same shape, different colours
        k = int(rng.integers(2, n + 1))
        shape = str(rng.choice(SHAPES))
        cols = rng.choice(COLOUR_NAMES, size=min(k, 8), replace=False)
        for j, c in zip(idx[:k], cols):
            objs[j][0], objs[j][1] = shape, str(c)
    idx = list(rng.permutation(n))
    if rng.random() < 0.3:  # same colour, different shapes
        k = int(rng.integers(2, min(n, 4) + 1))
        colour = str(rng.choice(COLOUR_NAMES))
        shapes = rng.choice(SHAPES, size=k, replace=False)
        for j, s in zip(idx[:k], shapes):
            objs[j][0], objs[j][1] = str(s), colour
    idx = list(rng.permutation(n))
    if rng.random() < 0.35:  # same shape and colour, the size names them
        a, b = idx[0], idx[1]
        objs[b][0], objs[b][1] = objs[a][0], objs[a][1]
        objs[a][2], objs[b][2] = "large", "small"
        if n >= 3 and rng.random() < 0.3:  # and an exact duplicate
            objs[idx[2]] = list(objs[int(rng.choice([a, b]))])
    return objs


def _make_obj(shape, colour, size, rng) -> tuple:
    angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE)) if shape in ROTATABLE else 0.0
    bw, bh = _box_aspect(shape, angle)
    lo, hi = SIZE_RANGE[size]
    # Both sides of the box must lie in the range: the longer side is drawn so the shorter one
    # still reaches the lower bound.
    big_lo = lo * max(bw, bh) / min(bw, bh)
    extent = float(rng.uniform(min(big_lo, hi), hi))
    s = extent / max(bw, bh)
    return angle, bw * s, bh * s


def _centre_ok(o: Obj) -> bool:
    for v in (o.cx, o.cy):
        if abs(v - 1 / 3) < GRID_MARGIN or abs(v - 2 / 3) < GRID_MARGIN:
            return False
    gx, gy = centroid(o)
    return _cell_index(gx) == _cell_index(o.cx) and _cell_index(gy) == _cell_index(o.cy)


def _place(attrs, rng, tries=300):
    placed = []
    hulls = []
    order = sorted(range(len(attrs)), key=lambda i: attrs[i][2] != "large")
    out = [None] * len(attrs)
    for i in order:
        shape, colour, size = attrs[i]
        for _ in range(tries):
            angle, w, h = _make_obj(shape, colour, size, rng)
            m = EDGE_MARGIN
            cx = float(rng.uniform(m + w / 2, 1 - m - w / 2))
            cy = float(rng.uniform(m + h / 2, 1 - m - h / 2))
            o = Obj(shape, colour, size, cx, cy, w, h, angle)
            if not _centre_ok(o):
                continue
            hp = hull(o)
            if all(separation(hp, q) >= (SAME_COLOUR_GAP if p.colour == colour else MIN_GAP)
                   for p, q in zip(placed, hulls)):
                placed.append(o)
                hulls.append(hp)
                out[i] = o
                break
        else:
            return None
    return out


def sample_scene(rng: np.random.Generator, n: int | None = None) -> Scene:
    """A random scene: 1-6 objects (uniform unless n is given), non-overlapping, fully inside."""
    if n is None:
        n = int(rng.integers(1, 7))
    bg = sample_background(rng)
    attrs = _attributes(n, rng)
    for attempt in range(20):
        objs = _place(attrs, rng)
        if objs is not None:
            return Scene(bg, objs)
        # Crowded: shrink one large object and try again.
        large = [a for a in attrs if a[2] == "large"]
        if large and attempt % 2 == 1:
            large[int(rng.integers(len(large)))][2] = "small"
    attrs = [[a[0], a[1], "small"] for a in attrs]
    while True:
        objs = _place(attrs, rng)
        if objs is not None:
            return Scene(bg, objs)


# ----------------------------------------------------------------------------------------------
# References

def _unique(scene: Scene, obj: Obj, keys) -> bool:
    return sum(all(getattr(o, k) == getattr(obj, k) for k in keys) for o in scene.objects) == 1


def reference(obj: Obj, scene: Scene) -> str | None:
    """Shortest unique of "{shape}", "{colour} {shape}", "{size} {colour} {shape}"."""
    if _unique(scene, obj, ("shape",)):
        return obj.shape
    if _unique(scene, obj, ("shape", "colour")):
        return f"{obj.colour} {obj.shape}"
    if _unique(scene, obj, ("shape", "colour", "size")):
        return f"{obj.size} {obj.colour} {obj.shape}"
    return None


def reference_without_colour(obj: Obj, scene: Scene) -> str | None:
    if _unique(scene, obj, ("shape",)):
        return obj.shape
    if _unique(scene, obj, ("shape", "size")):
        return f"{obj.size} {obj.shape}"
    return None


def reference_without_shape(obj: Obj, scene: Scene) -> str | None:
    if _unique(scene, obj, ("colour",)):
        return f"{obj.colour} object"
    if _unique(scene, obj, ("colour", "size")):
        return f"{obj.size} {obj.colour} object"
    return None


# ----------------------------------------------------------------------------------------------
# Description and scoring

def _describe_key(o: Obj):
    r, c = cell(o)
    return (r, c, o.cx, o.cy)


def describe(scene: Scene) -> str:
    """Contract description. Objects in grid-cell order (rows top to bottom, cells left to right);
    two in one cell by centre x, then centre y."""
    parts = []
    for o in sorted(scene.objects, key=_describe_key):
        pos = position_of(o)
        where = "in the center" if pos == "center" else f"at the {pos}"
        parts.append(f"a {o.size} {o.colour} {o.shape} {where}")
    if len(parts) == 1:
        return f"There is one shape: {parts[0]}."
    return f"There are {len(parts)} shapes: " + ", ".join(parts[:-1]) + f" and {parts[-1]}."


def normalise_answer(s: str) -> str:
    """The contract's scoring normalisation: lowercase, trim spaces and one final period."""
    s = s.strip().lower()
    if s.endswith("."):
        s = s[:-1].rstrip()
    return s


def is_correct(pred: str, answer: str) -> bool:
    return normalise_answer(pred) == normalise_answer(answer)


# ----------------------------------------------------------------------------------------------
# Questions

COUNT_FORMS = ("How many {X} are there?", "How many {X} can you see?", "Count the {X}.")
EXIST_FORMS = ("Is there a {colour} {shape}?", "Is there a {shape}?", "Are there any {colour} shapes?")
COLOUR_FORMS = ("What color is the {ref}?", "What is the color of the {ref}?")
SHAPE_FORMS = ("What shape is the {ref}?", "What is the {colour} object?")
SIZE_FORMS = ("Is the {ref} large or small?", "What size is the {ref}?")
WHERE_FORMS = ("Where is the {ref}?",)
RELATION_FORMS = ("Is the {ref1} {rel} the {ref2}?",)
RELATIONS = ("to the left of", "to the right of", "above", "below")
DESCRIBE_FORMS = ("Describe the image.", "What do you see?")

OTHER_QUESTIONS = (
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "What is 2 plus 2?",
    "How are you today?",
    "Tell me a joke.",
    "What is the weather like tomorrow?",
    "Write a poem about the sea.",
    "Translate 'good morning' into Spanish.",
    "What is the boiling point of water?",
    "Who painted the Mona Lisa?",
    "What year did the Second World War end?",
    "Can you recommend a good book?",
    "What is your name?",
    "Hello!",
    "Good morning.",
    "Thank you very much.",
    "What time is it?",
    "How do I bake bread?",
    "Explain quantum mechanics in simple terms.",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "How many days are there in a week?",
    "What color is the sky?",
    "What colour is a banana?",
    "What is the square root of 144?",
    "Who is the president of the United States?",
    "Summarize the plot of Hamlet.",
    "Write a Python function that sorts a list.",
    "What is the meaning of life?",
    "Do you like music?",
    "What is your favourite food?",
    "Where do penguins live?",
    "How far away is the Moon?",
    "What is the tallest mountain on Earth?",
    "Give me three tips for sleeping better.",
    "What is photosynthesis?",
    "Can you help me with my homework?",
    "Which language is spoken in Brazil?",
    "What is the population of Tokyo?",
    "How do airplanes fly?",
    "Who discovered penicillin?",
    "What is the chemical symbol for gold?",
    "Please ignore the picture and tell me a story.",
    "Write an email to my boss asking for a day off.",
    "What should I cook for dinner?",
    "Is it going to rain today?",
    "What is the speed of light?",
    "How many continents are there?",
    "Who won the football World Cup in 2018?",
    "What is the longest river in the world?",
    "Recommend a movie for tonight.",
    "What does DNA stand for?",
    "How do I reset my password?",
    "Are you a robot?",
    "What is the difference between a virus and a bacterium?",
    "Spell the word 'necessary'.",
    "What is 15 times 12?",
    "Name three fruits.",
    "Why is the ocean salty?",
    "What is the currency of Japan?",
    "How old is the universe?",
    "Can you sing a song?",
    "List the planets in order.",
    "What is the opposite of hot?",
    "What do cats eat?",
    "Who invented the telephone?",
    "How do I learn to play the guitar?",
    "What is the freezing point of water in Fahrenheit?",
    "Good night!",
    "What's up?",
    "Describe your ideal vacation.",
    "What is a black hole?",
    "Count from one to ten.",
    "Which is heavier, a kilogram of feathers or a kilogram of iron?",
    "What is the main ingredient of guacamole?",
    "How many sides does a hexagon have?",
    "Where is the Eiffel Tower?",
    "Is the Earth flat?",
    "What is the biggest animal in the world?",
    "Please write a haiku about autumn.",
    "What are the primary colours?",
    "How do I make a cup of tea?",
)


# Off-topic questions the generator never asks; the evaluation set draws half of its "other"
# questions from here, so that family measures recognising off-topic questions, not recalling
# the training pool.
OTHER_QUESTIONS_HELDOUT = (
    "Who was the first person to walk on the Moon?",
    "What is the capital of Australia?",
    "How do volcanoes form?",
    "Can you write a limerick about a cat?",
    "What is the plural of mouse?",
    "How many minutes are in an hour?",
    "What colour are emeralds?",
    "Where is Mount Kilimanjaro?",
    "What is the smallest prime number?",
    "Who composed the Four Seasons?",
    "Please tell me the news.",
    "What are you doing this weekend?",
    "How do I change a flat tyre?",
    "Why do leaves change colour in autumn?",
    "What does a carpenter do?",
    "Is coffee bad for you?",
    "Explain how a rainbow forms.",
    "What is the capital of Canada?",
    "Give me a synonym for happy.",
    "Which ocean is the largest?",
    "How many strings does a violin have?",
    "Nice to meet you.",
    "What is machine learning?",
    "Where do kangaroos live?",
    "Convert 10 miles to kilometres.",
    "What shape is the Earth?",
    "Who built the pyramids?",
    "What is your opinion on pineapple pizza?",
    "Write a short story about a dragon.",
    "What is the first letter of the alphabet?",
)

# Slot-filled off-topic questions: many distinct strings from few templates, so the model learns
# the family from what the questions are about, not from memorising a list.
_OTHER_TEMPLATES = (
    ("What is the capital of {}?", ("Germany", "Italy", "Spain", "Japan", "Egypt", "Peru",
                                    "Kenya", "Norway", "India", "Mexico", "Poland", "Chile")),
    ("Translate '{}' into French.", ("thank you", "good night", "where is the station",
                                     "I am hungry", "see you tomorrow", "how much is it")),
    ("What is {} plus {}?", None),
    ("Tell me about {}.", ("the Roman Empire", "black holes", "the French Revolution",
                           "climate change", "honey bees", "the stock market", "jazz")),
    ("Write a {} about {}.", (("poem", "song", "story", "limerick", "letter"),
                              ("the ocean", "friendship", "a robot", "winter", "coffee", "a city"))),
    ("Who is {}?", ("Albert Einstein", "Marie Curie", "William Shakespeare", "Cleopatra",
                    "Isaac Newton", "Frida Kahlo")),
    ("How do I {}?", ("tie a tie", "boil an egg", "learn Spanish", "fix a bike", "write a CV",
                      "plant tomatoes", "save money")),
)


def _other_question(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        return _pick(rng, OTHER_QUESTIONS)
    t, slots = _OTHER_TEMPLATES[int(rng.integers(len(_OTHER_TEMPLATES)))]
    if slots is None:
        return t.format(int(rng.integers(1, 100)), int(rng.integers(1, 100)))
    if isinstance(slots[0], tuple):
        return t.format(*(_pick(rng, s) for s in slots))
    return t.format(_pick(rng, slots))


def style_question(q: str, rng: np.random.Generator) -> str:
    """Surface variation the contract allows: any case, a missing trailing ? or ."""
    r = rng.random()
    if r < 0.12:
        q = q.lower()
    elif r < 0.14:
        q = q.upper()
    if rng.random() < 0.15:
        q = q.rstrip("?.")
    return q


def _colour_word(q: str, rng: np.random.Generator) -> str:
    return q.replace("color", "colour") if rng.random() < 0.5 else q


def _article(colour: str, rng: np.random.Generator) -> str:
    """The contract writes "a {colour}"; English writes "an orange". Both are asked."""
    return "an" if colour == "orange" and rng.random() < 0.5 else "a"


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _relation_holds(a: Obj, b: Obj, rel: str) -> bool | None:
    """True/False when the relation may be asked about a and b, None when the centres are too
    close along its axis (checked on box centres and area centroids alike)."""
    (ax, ay), (bx, by) = centroid(a), centroid(b)
    if rel in ("to the left of", "to the right of"):
        d1, d2 = b.cx - a.cx, bx - ax
    else:
        d1, d2 = b.cy - a.cy, by - ay
    if min(abs(d1), abs(d2)) < RELATION_MIN or (d1 > 0) != (d2 > 0):
        return None
    positive = d1 > 0  # a left of / above b
    return positive if rel in ("to the left of", "above") else not positive


def relation_candidates(scene: Scene) -> list:
    """(ref1, rel, ref2, answer) for every relation question the contract allows."""
    out = []
    refs = [(o, reference(o, scene)) for o in scene.objects]
    refs = [(o, r) for o, r in refs if r is not None]
    for a, ra in refs:
        for b, rb in refs:
            if a is b:
                continue
            for rel in RELATIONS:
                h = _relation_holds(a, b, rel)
                if h is not None:
                    out.append((ra, rel, rb, "yes" if h else "no"))
    return out


def _count_candidates(scene: Scene) -> dict:
    """Category -> list of (X, answer)."""
    objs = scene.objects
    n = len(objs)
    cats = {"total": [("shapes", n), ("objects", n)]}
    cats["colour"] = [(f"{c} shapes", sum(o.colour == c for o in objs)) for c in COLOUR_NAMES]
    cats["shape"] = [(f"{s}s", sum(o.shape == s for o in objs)) for s in SHAPES]
    cats["colour_shape"] = [(f"{c} {s}s", sum(o.colour == c and o.shape == s for o in objs))
                            for c in COLOUR_NAMES for s in SHAPES]
    cats["size"] = [(f"{z} shapes", sum(o.size == z for o in objs)) for z in SIZES]
    return cats


# Weights per count answer 0..6, set so the answers come out roughly even over many scenes
# (small counts are available in every scene, large ones only in crowded ones).
_COUNT_WEIGHT = (1.0, 1.0, 1.85, 3.7, 6.7, 12.0, 26.0)


def _qa_count(scene, rng):
    cats = _count_candidates(scene)
    present_c = {o.colour for o in scene.objects}
    present_s = {o.shape for o in scene.objects}
    values = sorted({a for items in cats.values() for _, a in items})
    w = np.array([_COUNT_WEIGHT[v] for v in values])
    target = values[int(rng.choice(len(values), p=w / w.sum()))]
    names = [c for c, items in cats.items() if any(a == target for _, a in items)]
    cat = _pick(rng, names)
    items = [(x, a) for x, a in cats[cat] if a == target]
    if target == 0 and cat == "colour_shape" and rng.random() < 0.8:
        # Plausible zero: the colour or the shape is in the picture, just not together.
        plausible = [(x, a) for x, a in items
                     if x.split()[0] in present_c or x.split()[1][:-1] in present_s]
        items = plausible or items
    x, a = _pick(rng, items)
    q = _pick(rng, COUNT_FORMS).format(X=x)
    return q, str(a)


def _qa_exist(scene, rng):
    objs = scene.objects
    present_cs = {(o.colour, o.shape) for o in objs}
    present_c = {o.colour for o in objs}
    present_s = {o.shape for o in objs}
    yes = rng.random() < 0.5
    forms = [0, 1, 2]
    if not yes and len(present_s) == len(SHAPES):
        forms = [0, 2]
    form = forms[int(rng.choice(len(forms), p=np.array([0.45, 0.25, 0.3])[forms] /
                                np.array([0.45, 0.25, 0.3])[forms].sum()))]
    if form == 0:
        if yes:
            c, s = _pick(rng, sorted(present_cs))
        else:
            absent = [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in present_cs]
            both = [(c, s) for c, s in absent if c in present_c and s in present_s]
            one = [(c, s) for c, s in absent if c in present_c or s in present_s]
            r = rng.random()
            pool = both if (both and r < 0.6) else (one if (one and r < 0.9) else absent)
            c, s = _pick(rng, pool)
        q = EXIST_FORMS[0].format(colour=c, shape=s)
        q = q.replace(f"a {c}", f"{_article(c, rng)} {c}", 1)
    elif form == 1:
        pool = sorted(present_s) if yes else [s for s in SHAPES if s not in present_s]
        q = EXIST_FORMS[1].format(shape=_pick(rng, pool))
    else:
        pool = sorted(present_c) if yes else [c for c in COLOUR_NAMES if c not in present_c]
        q = EXIST_FORMS[2].format(colour=_pick(rng, pool))
    return q, "yes" if yes else "no"


def _qa_colour(scene, rng):
    items = [(o, reference_without_colour(o, scene)) for o in scene.objects]
    items = [(o, r) for o, r in items if r is not None]
    if not items:
        return None
    o, r = _pick(rng, items)
    q = _colour_word(_pick(rng, COLOUR_FORMS).format(ref=r), rng)
    return q, o.colour


def _qa_shape(scene, rng):
    items = [(o, reference_without_shape(o, scene)) for o in scene.objects]
    items = [(o, r) for o, r in items if r is not None]
    if not items:
        return None
    o, r = _pick(rng, items)
    if r == f"{o.colour} object" and rng.random() < 0.4:
        q = SHAPE_FORMS[1].format(colour=o.colour)
    else:
        q = SHAPE_FORMS[0].format(ref=r)
    return q, o.shape


def _qa_size(scene, rng):
    items = [(o, reference(o, scene)) for o in scene.objects]
    items = [(o, r) for o, r in items if r is not None]
    if not items:
        return None
    # A reference that already holds the size gives the answer away: allowed, but rare.
    plain = [(o, r) for o, r in items if not r.startswith(o.size)]
    if plain and rng.random() < 0.9:
        items = plain
    sizes = {o.size for o, _ in items}
    # Crowded scenes hold mostly small objects; leaning to "large" when both can be asked
    # evens the answers out over many scenes.
    want = ("large" if rng.random() < 0.66 else "small") if len(sizes) == 2 else sizes.pop()
    o, r = _pick(rng, [(o, r) for o, r in items if o.size == want])
    return _pick(rng, SIZE_FORMS).format(ref=r), o.size


_WHERE_WEIGHT = (0.5, 0.72, 1.0)  # by how many of row/column are not the middle one


def _qa_where(scene, rng):
    items = [(o, reference(o, scene)) for o in scene.objects]
    items = [(o, r) for o, r in items if r is not None]
    if not items:
        return None
    # Centres fall in the middle cell more often than at the edges, and least in the corners
    # (large objects cannot sit near a border); weights even the answers out.
    w = np.array([_WHERE_WEIGHT[sum(v != 1 for v in cell(o))] for o, _ in items])
    o, r = items[int(rng.choice(len(items), p=w / w.sum()))]
    return WHERE_FORMS[0].format(ref=r), position_of(o)


def _qa_relation(scene, rng):
    cands = relation_candidates(scene)
    if not cands:
        return None
    want = "yes" if rng.random() < 0.5 else "no"
    pool = [c for c in cands if c[3] == want] or cands
    r1, rel, r2, a = _pick(rng, pool)
    return RELATION_FORMS[0].format(ref1=r1, rel=rel, ref2=r2), a


def _qa_describe(scene, rng):
    return _pick(rng, DESCRIBE_FORMS), describe(scene)


def _qa_other(scene, rng):
    return _other_question(rng), OTHER_ANSWER


_QA = {
    "count": _qa_count, "exist": _qa_exist, "colour": _qa_colour, "shape": _qa_shape,
    "size": _qa_size, "where": _qa_where, "relation": _qa_relation,
    "describe": _qa_describe, "other": _qa_other,
}


def possible_families(scene: Scene) -> list:
    """Families that have at least one allowed question about this scene."""
    out = []
    for f in FAMILIES:
        if f == "colour":
            ok = any(reference_without_colour(o, scene) for o in scene.objects)
        elif f == "shape":
            ok = any(reference_without_shape(o, scene) for o in scene.objects)
        elif f in ("size", "where"):
            ok = any(reference(o, scene) for o in scene.objects)
        elif f == "relation":
            ok = bool(relation_candidates(scene))
        else:
            ok = True
        if ok:
            out.append(f)
    return out


def sample_qa(scene: Scene, rng: np.random.Generator, family: str | None = None):
    """(family, question, answer). family=None picks uniformly among the families this scene
    allows, so it always returns a triple. A named family the scene does not allow (no unique
    reference, no pair far enough apart for a relation) returns None."""
    if family is None:
        family = _pick(rng, possible_families(scene))
    if family not in _QA:
        raise ValueError(f"unknown family {family!r}")
    qa = _QA[family](scene, rng)
    if qa is None:
        return None
    q, a = qa
    return family, style_question(q, rng), a
