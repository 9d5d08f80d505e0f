#!/usr/bin/env python3
"""Checks the Shapes-world generator and both renderers against docs/SHAPES_WORLD.md.

Answers are checked by an independent reading of each question (regular expressions over the
question text, counting over the scene), not by calling the generator's own helpers.

  /usr/bin/python3 tools/shapes/test_world.py
"""
from __future__ import annotations

import collections
import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import render as R  # noqa: E402
import render_cv as C  # noqa: E402
import world as W  # noqa: E402

N_SCENES = 4000
EPS = 1e-9

# ---------------------------------------------------------------------------------------------
# An independent reading of questions


def matches(o, words):
    """Does object o fit a reference given as its words (size/colour/shape or 'object')?"""
    for w in words:
        if w in W.SIZES and o.size != w:
            return False
        if w in W.COLOURS and o.colour != w:
            return False
        if w in W.SHAPES and o.shape != w:
            return False
    return True


def resolve(ref, scene):
    found = [o for o in scene.objects if matches(o, ref.split())]
    assert len(found) == 1, (ref, found)
    return found[0]


def cell_name(o):
    col = 0 if o.cx < 1 / 3 else 1 if o.cx < 2 / 3 else 2
    row = 0 if o.cy < 1 / 3 else 1 if o.cy < 2 / 3 else 2
    return [["top left", "top", "top right"], ["left", "center", "right"],
            ["bottom left", "bottom", "bottom right"]][row][col]


def canon(q):
    q = q.lower().strip()
    q = re.sub(r"[?.]$", "", q)
    q = q.replace("colour", "color")
    return q


SH = "(circle|square|triangle|star)"
CO = "(red|green|blue|yellow|purple|orange|white|black)"
SZ = "(small|large)"
REF = r"((?:(?:small|large) )?(?:(?:red|green|blue|yellow|purple|orange|white|black) )?" \
      r"(?:circle|square|triangle|star))"
FORMS = {
    "count": [r"how many (.+) are there", r"how many (.+) can you see", r"count the (.+)"],
    "exist": [rf"is there an? {CO} {SH}", rf"is there a {SH}", rf"are there any {CO} shapes"],
    "colour": [rf"what color is the {REF}", rf"what is the color of the {REF}"],
    "shape": [rf"what shape is the ((?:{SZ} )?{CO} object)", rf"what is the {CO} object"],
    "size": [rf"is the {REF} large or small", rf"what size is the {REF}"],
    "where": [rf"where is the {REF}"],
    "relation": [rf"is the {REF} (to the left of|to the right of|above|below) the {REF}"],
    "describe": [r"describe the image", r"what do you see"],
}


def count_objects(x, scene):
    words = x.split()
    assert words[-1] in ("shapes", "objects") or words[-1][:-1] in W.SHAPES, x
    if words[-1] in ("shapes", "objects"):
        words = words[:-1]
    else:
        words[-1] = words[-1][:-1]
    if words:
        assert len(words) <= 2, x
    return sum(matches(o, words) for o in scene.objects)


def centre_gap(a, b, axis):
    """Signed gap b - a along the axis, on box centres and on area centroids."""
    ga, gb = W.centroid(a), W.centroid(b)
    if axis == "x":
        return b.cx - a.cx, gb[0] - ga[0]
    return b.cy - a.cy, gb[1] - ga[1]


def expected_answer(family, question, scene):
    """(answer, form index) by reading the question."""
    q = canon(question)
    for i, form in enumerate(FORMS.get(family, [])):
        m = re.fullmatch(form, q)
        if not m:
            continue
        g = m.groups()
        if family == "count":
            return str(count_objects(g[0], scene)), i
        if family == "exist":
            words = [w for w in g if w]
            return ("yes" if any(matches(o, words) for o in scene.objects) else "no"), i
        if family == "colour":
            o = resolve(g[0], scene)
            assert o.colour not in g[0]
            return o.colour, i
        if family == "shape":
            ref = g[0] if i == 0 else g[0] + " object"
            return resolve(ref, scene).shape, i
        if family == "size":
            return resolve(g[0], scene).size, i
        if family == "where":
            return cell_name(resolve(g[0], scene)), i
        if family == "relation":
            a, rel, b = resolve(g[0], scene), g[1], resolve(g[2], scene)
            assert a is not b
            d1, d2 = centre_gap(a, b, "x" if "of" in rel else "y")
            assert min(abs(d1), abs(d2)) >= W.RELATION_MIN and (d1 > 0) == (d2 > 0), question
            forward = d1 > 0  # a left of / above b
            yes = forward if rel in ("to the left of", "above") else not forward
            return ("yes" if yes else "no"), i
        if family == "describe":
            return None, i
    raise AssertionError(f"{family}: question matches no contract wording: {question!r}")


# ---------------------------------------------------------------------------------------------

def test_scenes(scenes):
    counts = collections.Counter()
    for sc in scenes:
        n = len(sc.objects)
        assert 1 <= n <= 6
        counts[n] += 1
        bg = sc.background
        assert bg.kind in ("flat", "gradient", "noise", "texture")
        for c in [bg.colour] + ([bg.colour2] if bg.colour2 else []):
            lum = W.luminance(c)
            assert 80 <= lum - 2 * bg.amplitude and lum + 2 * bg.amplitude <= 210, (c, bg)
            # A tone, not a colour: small spread between channels, far from every object colour.
            assert max(c) - min(c) <= 45, c
            for name, rgb in W.COLOURS.items():
                assert np.linalg.norm(np.subtract(c, rgb)) > 60, (c, name)
        hulls = []
        placed = []
        for o in sc.objects:
            assert o.shape in W.SHAPES and o.colour in W.COLOURS and o.size in W.SIZES
            lo, hi = W.SIZE_RANGE[o.size]
            assert lo - EPS <= o.w <= hi + EPS and lo - EPS <= o.h <= hi + EPS, o
            if o.shape == "circle":
                assert o.angle == 0
            else:
                assert abs(o.angle) <= W.MAX_ANGLE
            p = W.outline(o)
            assert p.min() >= 0 and p.max() <= 1, o
            assert abs(np.ptp(p[:, 0]) - o.w) < 1e-9 and abs(np.ptp(p[:, 1]) - o.h) < 1e-9
            assert abs((p[:, 0].min() + p[:, 0].max()) / 2 - o.cx) < 1e-9
            for q, h in zip(placed, hulls):
                gap = W.SAME_COLOUR_GAP if q.colour == o.colour else W.MIN_GAP
                assert W.separation(W.hull(o), h) >= gap - EPS
            hulls.append(W.hull(o))
            placed.append(o)
            # Box centre and area centroid agree on the grid cell.
            gx, gy = W.centroid(o)
            assert W.position_of(o) == cell_name(W.Obj(o.shape, o.colour, o.size, gx, gy, 0, 0))
            assert W.position_of(o) == cell_name(o)
    print("objects per scene:", dict(sorted(counts.items())))
    for n in range(1, 7):
        assert abs(counts[n] / len(scenes) - 1 / 6) < 0.03


def test_overlap_by_pixels(scenes):
    """Rasterised exactly: no pixel belongs to two objects."""
    from PIL import Image, ImageDraw
    size = 400
    for sc in scenes[:300]:
        total = np.zeros((size, size), np.int32)
        for o in sc.objects:
            m = Image.new("L", (size, size), 0)
            ImageDraw.Draw(m).polygon([(x * size, y * size) for x, y in W.outline(o)], fill=1)
            total += np.asarray(m)
        assert total.max() <= 1


def test_references(scenes):
    stats = collections.Counter()
    for sc in scenes:
        objs = sc.objects
        shapes = collections.Counter(o.shape for o in objs)
        colours = collections.Counter(o.colour for o in objs)
        if any(len({o.colour for o in objs if o.shape == s}) > 1 for s in shapes):
            stats["same shape, different colours"] += 1
        if any(len({o.shape for o in objs if o.colour == c}) > 1 for c in colours):
            stats["same colour, different shapes"] += 1
        for o in objs:
            r = W.reference(o, sc)
            forms = [o.shape, f"{o.colour} {o.shape}", f"{o.size} {o.colour} {o.shape}"]
            unique = [f for f in forms if sum(matches(x, f.split()) for x in objs) == 1]
            assert r == (unique[0] if unique else None), (r, unique)
            if r is not None:
                assert resolve(r, sc) is o
            if r is not None and r.startswith(o.size):
                stats["reference needs the size"] += 1
            if r is None:
                stats["object with no reference"] += 1
        if any(W.reference(o, sc) and " " in W.reference(o, sc) for o in objs):
            stats["reference needs the colour or size"] += 1
    n = len(scenes)
    print("hard cases (scenes or objects per scene):",
          {k: round(v / n, 3) for k, v in sorted(stats.items())})
    assert stats["same shape, different colours"] / n > 0.3
    assert stats["same colour, different shapes"] / n > 0.25
    assert stats["reference needs the size"] / n > 0.2
    assert stats["object with no reference"] > 0


def test_describe():
    bg = W.Background("flat", (128, 128, 128))
    one = W.Scene(bg, [W.Obj("circle", "red", "large", 0.5, 0.5, 0.3, 0.3)])
    assert W.describe(one) == "There is one shape: a large red circle in the center."
    two = W.Scene(bg, [W.Obj("star", "blue", "small", 0.8, 0.8, 0.12, 0.12),
                       W.Obj("square", "white", "large", 0.2, 0.15, 0.3, 0.3)])
    assert W.describe(two) == ("There are 2 shapes: a large white square at the top left and "
                               "a small blue star at the bottom right.")
    # Row by row (top first), then left to right; within one cell by x, then y.
    many = W.Scene(bg, [
        W.Obj("triangle", "green", "small", 0.5, 0.9, 0.12, 0.12),    # bottom
        W.Obj("circle", "black", "small", 0.9, 0.5, 0.12, 0.12),      # right
        W.Obj("square", "yellow", "small", 0.25, 0.2, 0.12, 0.12),    # top left, x 0.25
        W.Obj("star", "orange", "small", 0.1, 0.25, 0.12, 0.12),      # top left, x 0.10
        W.Obj("circle", "purple", "large", 0.5, 0.5, 0.25, 0.25),     # center
        W.Obj("square", "red", "small", 0.9, 0.1, 0.12, 0.12),        # top right
    ])
    assert W.describe(many) == (
        "There are 6 shapes: a small orange star at the top left, a small yellow square at the "
        "top left, a small red square at the top right, a large purple circle in the center, "
        "a small black circle at the right and a small green triangle at the bottom."), \
        W.describe(many)
    same_x = W.Scene(bg, [W.Obj("star", "red", "small", 0.5, 0.6, 0.1, 0.1),
                          W.Obj("star", "blue", "small", 0.5, 0.4, 0.1, 0.1),
                          W.Obj("circle", "white", "small", 0.1, 0.9, 0.1, 0.1)])
    assert W.describe(same_x) == (
        "There are 3 shapes: a small blue star in the center, a small red star in the center "
        "and a small white circle at the bottom left.")
    assert W.position_of(W.Obj("circle", "red", "small", 0.34, 0.01, 0.1, 0.1)) == "top"
    assert W.position_of(W.Obj("circle", "red", "small", 0.99, 0.67, 0.1, 0.1)) == "bottom right"


def test_describe_sampled(scenes):
    pat = re.compile(r"a (small|large) (\w+) (\w+) (?:at the ([a-z ]+)|in the center)")
    for sc in scenes[:1000]:
        d = W.describe(sc)
        n = len(sc.objects)
        if n == 1:
            assert d.startswith("There is one shape: a ") and d.endswith(".")
            body = d[len("There is one shape: "):-1]
            items = [body]
        else:
            head = f"There are {n} shapes: "
            assert d.startswith(head) and d.endswith("."), d
            body = d[len(head):-1]
            first, last = body.rsplit(" and a ", 1)
            items = first.split(", ") + ["a " + last]
        assert len(items) == n, d
        keys = []
        for it in items:
            m = pat.fullmatch(it)
            assert m, it
            pos = m.group(4) or "center"
            assert pos in W.POSITION_NAMES and pos != "center" or m.group(4) is None
            keys.append((W.POSITION_NAMES.index(pos), m.group(1), m.group(2), m.group(3)))
        assert [k[0] for k in keys] == sorted(k[0] for k in keys), d
        assert sorted(k[1:] for k in keys) == sorted((o.size, o.colour, o.shape)
                                                     for o in sc.objects)


def test_qa(scenes, rng):
    answers = collections.defaultdict(collections.Counter)
    forms = collections.Counter()
    surface = collections.Counter()
    none = collections.Counter()
    for sc in scenes:
        for fam in W.FAMILIES:
            for _ in range(2):
                r = W.sample_qa(sc, rng, fam)
                if r is None:
                    assert fam not in W.possible_families(sc)
                    none[fam] += 1
                    break
                f, q, a = r
                assert f == fam
                assert a == a.strip()
                if fam == "other":
                    assert a == W.OTHER_ANSWER
                    answers[fam]["(fixed)"] += 1
                    surface["other:" + q.lower().rstrip("?.!")] += 1
                    continue
                if fam == "describe":
                    assert a == W.describe(sc)
                else:
                    assert a == a.lower() and not a.endswith("."), a
                want, i = expected_answer(fam, q, sc)
                forms[(fam, i)] += 1
                if want is not None:
                    assert a == want, (q, a, want, W.describe(sc))
                answers[fam][a if fam != "describe" else "(description)"] += 1
                if fam == "exist" and i == 0:
                    words = canon(q).split()
                    c, s = words[-2], words[-1]
                    if a == "no":
                        present_c = any(o.colour == c for o in sc.objects)
                        present_s = any(o.shape == s for o in sc.objects)
                        answers["exist negatives"]["colour or shape present"
                                                   if present_c or present_s else "neither"] += 1
                if fam == "count":
                    x = re.fullmatch(FORMS["count"][i], canon(q)).group(1)
                    kind = ("total" if x in ("shapes", "objects") else
                            "size" if x.split()[0] in W.SIZES else
                            "colour" if x.endswith(" shapes") else
                            "colour shape" if len(x.split()) == 2 else "shape")
                    answers["count kinds"][kind] += 1
                surface["lower" if q == q.lower() else "upper" if q == q.upper() else "mixed"] += 1
                surface["no final ?/." if q[-1] not in "?." else "final ?/."] += 1
                if "colour" in q.lower():
                    surface["colour"] += 1
                if "color" in q.lower():
                    surface["color"] += 1
                if re.search(r"\ban orange\b", q.lower()):
                    surface["an orange"] += 1
                if re.search(r"\ba orange\b", q.lower()):
                    surface["a orange"] += 1
    print("answers per family:")
    for fam, c in answers.items():
        tot = sum(c.values())
        print(f"  {fam:24s}", ", ".join(f"{k}: {v / tot:.1%}" for k, v in sorted(c.items())))
    print("families not askable (scenes):", dict(none))
    print("forms used:", {f"{k[0]}#{k[1]}": v for k, v in sorted(forms.items())})
    print("surface:", {k: v for k, v in surface.items() if not k.startswith("other:")})
    # Every wording of the contract appears.
    for fam, fl in FORMS.items():
        for i in range(len(fl)):
            assert forms[(fam, i)] > 0, (fam, i)
    for k in ("lower", "mixed", "upper", "no final ?/.", "final ?/.", "colour", "color",
              "an orange", "a orange"):
        assert surface[k] > 0, k
    others = [k for k in surface if k.startswith("other:")]
    print("distinct off-topic questions:", len(others))
    assert len(set(q.lower() for q in W.OTHER_QUESTIONS)) >= 60
    assert len(others) >= 100
    # Balance.
    for fam in ("exist", "relation"):
        c = answers[fam]
        assert abs(c["yes"] / (c["yes"] + c["no"]) - 0.5) < 0.03, (fam, c)
    neg = answers["exist negatives"]
    assert neg["colour or shape present"] / sum(neg.values()) > 0.8
    cnt = answers["count"]
    tot = sum(cnt.values())
    assert set(cnt) == {str(i) for i in range(7)}
    assert all(0.08 < cnt[str(i)] / tot < 0.2 for i in range(7)), cnt
    sz = answers["size"]
    assert abs(sz["large"] / (sz["large"] + sz["small"]) - 0.5) < 0.05, sz
    for fam, names in (("colour", W.COLOUR_NAMES), ("shape", W.SHAPES),
                       ("where", W.POSITION_NAMES)):
        c = answers[fam]
        tot = sum(c.values())
        assert set(c) == set(names)
        assert all(0.6 / len(names) < c[k] / tot < 1.5 / len(names) for k in names), (fam, c)
    # family=None always returns a question.
    for sc in scenes[:500]:
        f, q, a = W.sample_qa(sc, rng)
        assert f in W.possible_families(sc)


def test_scoring():
    assert W.normalise_answer("  Yes. ") == "yes"
    assert W.normalise_answer("Top Left") == "top left"
    assert W.normalise_answer("3") == "3"
    assert W.is_correct("There is one shape: a large red circle in the center",
                        "There is one shape: a large red circle in the center.")
    assert W.is_correct(" RED ", "red")
    assert not W.is_correct("reds", "red")
    assert not W.is_correct("top", "top left")
    assert W.is_correct(W.OTHER_ANSWER.upper(), W.OTHER_ANSWER)


def test_determinism():
    def draw(seed, renderer, size):
        rng = np.random.default_rng(seed)
        sc = W.sample_scene(rng)
        im = renderer.render(sc, rng, size)
        qa = [W.sample_qa(sc, rng) for _ in range(6)]
        return repr(sc), np.asarray(im).tobytes(), qa
    for seed in range(40):
        for renderer in (R, C):
            size = [96, 150, 256, 511][seed % 4]
            a, b = draw(seed, renderer, size), draw(seed, renderer, size)
            assert a == b
    assert draw(1, R, 128)[0] != draw(2, R, 128)[0]


def test_render(rng):
    """Rendered pictures: size and mode, object colours within the jitter, background tone."""
    from PIL import Image, ImageDraw
    for k in range(120):
        r = np.random.default_rng(20_000 + k)
        sc = W.sample_scene(r)
        renderer = R if k % 2 == 0 else C
        size = [96, 128, 200, 320, 512, 1024][k % 6]
        im = renderer.render(sc, r, size)
        assert im.mode == "RGB" and im.size == (size, size)
        a = np.asarray(im).astype(np.float32)
        occupied = np.zeros((size, size), bool)
        for o in sc.objects:
            m = Image.new("L", (size, size), 0)
            ImageDraw.Draw(m).polygon([(x * size, y * size) for x, y in W.outline(o)], fill=1)
            m = np.asarray(m).astype(bool)
            occupied |= m
            # The middle of the object, away from edges, rims and JPEG ringing.
            inner = Image.new("L", (size, size), 0)
            c = np.array([o.cx, o.cy])
            ImageDraw.Draw(inner).polygon(
                [tuple((c + (p - c) * 0.35) * size) for p in W.outline(o)], fill=1)
            inner = np.asarray(inner).astype(bool)
            if inner.sum() < 4:
                continue
            med = np.median(a[inner], axis=0)
            err = np.abs(med - np.array(W.COLOURS[o.colour]))
            # +12 for blur, grain and JPEG; a channel JPEG has clipped at 0 or 255 (ringing
            # around saturated colours) is not the renderer's colour and is left out.
            clipped = (med <= 2) | (med >= 253)
            assert err[~clipped].max(initial=0) <= 25 + 12, (k, o.colour, med)
        free = ~occupied
        lum = np.median(a[free] @ np.array([0.299, 0.587, 0.114]))
        assert 80 - 6 <= lum <= 210 + 6, (k, lum)


def test_eval_set():
    root = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "data", "shapes_eval"))
    path = os.path.join(root, "eval.jsonl")
    if not os.path.exists(path):
        print("eval set not generated yet:", path)
        return
    lines = [json.loads(l) for l in open(path)]
    fams = collections.Counter(l["family"] for l in lines)
    images = {l["image"] for l in lines}
    for im in images:
        assert os.path.exists(os.path.join(root, im)), im
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(root) for fn in fns)
    print(f"eval set: {len(images)} pictures, {len(lines)} questions, {total / 1e6:.2f} MB,",
          dict(fams))
    assert total <= 2.5e6
    assert set(fams) == set(W.FAMILIES) and min(fams.values()) >= 60
    for l in lines:
        assert set(l) >= {"image", "question", "answer", "family"}
        assert l["seed"] >= 10 ** 9
        if l["family"] == "other":
            assert l["answer"] == W.OTHER_ANSWER


def main():
    rng = np.random.default_rng(12345)
    scenes = [W.sample_scene(np.random.default_rng(s)) for s in range(N_SCENES)]
    test_scenes(scenes)
    test_overlap_by_pixels(scenes)
    test_references(scenes)
    test_describe()
    test_describe_sampled(scenes)
    test_qa(scenes, rng)
    test_scoring()
    test_determinism()
    test_render(rng)
    test_eval_set()
    print("all shapes-world checks passed")


if __name__ == "__main__":
    main()
