#!/usr/bin/env python3
"""Trains a small GPT-NeoX-20B style byte-level BPE with the Hugging Face `tokenizers` library and
writes the tokenizer.json files plus the library's own encodings of a hard test set, which the C++
tokenizer must reproduce id for id.

    python3 tools/reference/make_tokenizer.py --out tests/fixtures/tokenizer

Outputs (all in --out):
  tokenizer.json, cases.json                 the NeoX-layout tokenizer used by the engine tests
  flags_tokenizer.json, flags_cases.json     NFKC + add_prefix_space + added tokens with lstrip,
                                             rstrip, single_word and normalized set
  noregex_tokenizer.json, noregex_cases.json no normaliser, ByteLevel with use_regex=False
  fuzz_cases.json                            {"main", "flags", "noregex"}: seeded random texts
                                             (and random id lists for decoding) for all three

Everything is deterministic: the corpus is embedded and the trainer breaks ties by pair order.
"""
import argparse
import json
import os
import random
import sys

from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)
import tokenizers

# A tiny test model has an embedding of 1024 rows, so every id must stay below that.
MAX_IDS = 1024
TRAIN_VOCAB = 960

PROSE = """\
The quick brown fox jumps over the lazy dog. It's a classic sentence that contains every letter.
She said she'd rather walk, but they're going to drive because we've got a long way to go.
I'm sure you'll like it; he'll be there at nine o'clock, and I'd bet the weather will be fine.
Mamba is a state space model. Its selective scan lets the model decide what to remember and what to forget.
A vision encoder turns the image into patches, and a projector maps them into the language model.
The circle is red, the square is blue, and the triangle is green. What color is the circle?
Machine learning models are trained on large datasets and evaluated on held-out benchmarks.
In the beginning there was nothing but the wind, the water and the long quiet night.
Please describe the picture in detail: the people, the objects, their colors and positions.
There are 3 apples, 12 oranges and 2024 grapes on the table; 1,234,567 is a big number.
Prices rose by 4.5% in 2023, from $19.99 to $20.89, while costs fell 0.75 percent.
Question: how many legs does a spider have? Answer: eight. Question: and an insect? Answer: six.
Don't stop! Won't you come? Isn't it nice? THAT'S IT. We'LL see. You'RE right. I'VE done it.
"Hello," she whispered... (quietly) -- and then [nothing] happened; {braces} & <angles> #tags @mentions.
The train leaves at 10:45 from platform 7, arriving in the city at 13:20 on Tuesday, 5 March.
Reading, writing, and arithmetic: the basics of education for children everywhere in the world.
"""

ACCENTED = """\
Café, naïve, résumé, façade, jalapeño, Ångström, coöperate, São Paulo, Zürich, Kraków, Łódź.
Les élèves étudient à l'école près de la forêt; où est la bibliothèque? Très bien, merci beaucoup.
Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Größe, Mädchen, schön, müde.
El niño comió una manzana en la mañana. ¿Dónde está el baño? ¡Qué día tan bonito!
Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Καλημέρα, τι κάνεις; Ευχαριστώ πολύ.
Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, как дела? Спасибо, хорошо.
我们今天去公园散步，天气很好。你好，世界！这是一个测试。机器学习模型。
日本語のテキストも少し入れておきます。こんにちは、元気ですか？
한국어 문장도 조금 있습니다. 안녕하세요, 반갑습니다.
"""

CHAT = [
    "<|user|>\nWhat color is the circle?<|endoftext|>\n<|assistant|>\nred<|endoftext|>",
    "<|user|>\nDescribe the image.<|endoftext|>\n<|assistant|>\nA cat sits on a mat next to a window.<|endoftext|>",
    "\n<|user|>\nHow many dogs are there?<|endoftext|>\n<|assistant|>\nThere are two dogs.<|endoftext|>",
    "<|user|>\nIs the sky blue?<|endoftext|>\n<|assistant|>\nyes<|endoftext|>",
    "<|user|>\nWhat is written on the sign?<|endoftext|>\n<|assistant|>\nThe sign says STOP.<|endoftext|>",
]

CODE = """\
def encode(self, text):
    ids = []
    for word in self.pre_tokenize(text):
        if word in self.cache:
            ids.extend(self.cache[word])
        else:
            ids.extend(self.bpe(word))
    return ids


class Model(nn.Module):
    def __init__(self, d_model=768, n_layer=24):
        super().__init__()
        self.layers = nn.ModuleList([Block(d_model) for _ in range(n_layer)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

int main(int argc, char** argv) {
\tfor (int i = 0; i < argc; ++i) {
\t\tstd::printf("%d: %s\\n", i, argv[i]);
\t}
\treturn 0;
}
"""


def corpus():
    lines = []
    lines += PROSE.splitlines()
    lines += ACCENTED.splitlines()
    lines += CHAT
    lines += CODE.split("\n\n\n")
    # Numbers of many shapes so digit merges exist.
    lines += [" ".join(str(n * 37 % 10007) for n in range(k, k + 25)) for k in range(0, 400, 25)]
    # Repeat so every pair reaches min_frequency and the longer words can merge fully.
    return lines * 3


def byte_alphabet():
    return pre_tokenizers.ByteLevel.alphabet()


def train_base():
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=TRAIN_VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=[
            AddedToken("<|endoftext|>", special=True, normalized=False),
            AddedToken("<|padding|>", special=True, normalized=False),
        ],
        initial_alphabet=byte_alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    # NeoX-20B adds runs of spaces as ordinary (non-special, normalized) added tokens.
    tok.add_tokens([AddedToken(" " * n, special=False, normalized=True, lstrip=False, rstrip=False,
                               single_word=False) for n in (8, 4, 2)])
    return tok


HARD_CASES = [
    "",
    "Hello world",
    "Hello, world!",
    " Hello world",
    "Hello world ",
    "  leading two spaces",
    "trailing three spaces   ",
    "a  b   c    d     e         f",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\nendings\r\n",
    "\n\n\n",
    " ",
    "     ",
    "\t \n \r\n ",
    "mixed \t\n whitespace   \n\t  end",
    "1234567890123456789012345678901234567890",
    "pi is 3.14159265358979 and e is 2.71828",
    "It's",
    "it's they're we've I'm you'll she'd can't",
    "IT'S THEY'RE WE'VE I'M YOU'LL SHE'D CAN'T",
    "The dog's bone's gone",
    "'s 't 're 've 'm 'll 'd",
    "''' 's'' x'y",
    "Hello!!! What??? Wow... ---- ==== ****",
    "(a+b)*[c-d]/{e%f} <g> #h @i $j ^k &l |m ~n `o",
    "Café naïve résumé",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301",
    "A\u030a\u0301 e\u0300\u0323 o\u0302\u0303",
    "\u0301",
    "\u0301\u0302\u0303 lone marks",
    " \u0301",
    "Η γρήγορη καφέ αλεπού πηδάει",
    "Съешь же ещё этих мягких французских булок",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
    "我们今天去公园散步，天气很好。",
    "日本語のテキスト、カタカナ、ひらがな",
    "한국어 문장도 조금 있습니다",
    "\u1100\u1161\u11a8 decomposed hangul",
    "emoji 😀😃😄 and 👍🏽 skin tone",
    "family 👨‍👩‍👧‍👦 zwj",
    "flags 🇺🇸🇫🇷🇯🇵",
    "rainbow 🏳️‍🌈 flag",
    "keycap 1️⃣ #️⃣",
    "<|endoftext|>",
    "<|endoftext|><|endoftext|>",
    "a<|endoftext|>b",
    " <|endoftext|> ",
    "<|padding|>x<|endoftext|>",
    "<|endoftext|",
    "<|endo<|endoftext|>ftext|>",
    "<|user|>\nWhat color is the circle?<|endoftext|>\n<|assistant|>\n",
    "<|user|>\nWhat color is the circle?<|endoftext|>\n<|assistant|>\nred<|endoftext|>\n<|user|>\nAnd the square?<|endoftext|>\n<|assistant|>\n",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space\u3000here",
    "en\u2002em\u2003thin\u2009hair\u200a",
    "zero\u200bwidth\u200cjoiner\u200dmark\ufeffbom",
    "line\u2028separator\u2029paragraph\u0085nel",
    "\u000b\u000c vertical tab and form feed",
    "control\u0001\u0002\u007f chars",
    "def f(x):\n    return x * 2\n\n\nclass A:\n        pass\n",
    "\tindented\n\t\tdeeper\n",
    "fullwidth ＡＢＣ１２３ and ligature ﬁ ﬂ",
    "superscripts x² y³ ½ ¼ Ⅻ ① ٣ ६",
    "math ∑ ∫ √ ∞ ≠ ≤ ≥ → ← ∀ ∃",
    "currency € £ ¥ ₹ ₽ ¢",
    "URL https://example.com/path?q=1&r=two#frag",
    "email someone@example.org, phone +1-555-0100",
    "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
    "x" * 300,
    " ".join(["the"] * 50),
    "𝕳𝖊𝖑𝖑𝖔 mathematical bold fraktur",
    "\U0001F600" * 5,
    "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307",
    "ǅ ǈ titlecase ᾈ",
    "ʰ ʲ modifier letters ー 々",
    "She said \"I'm fine\" and left.",
    "It’s curly ’s and ‘quotes’ “here”",
]


def encode_cases(tok, texts):
    cases = []
    for text in texts:
        enc = tok.encode(text)
        decoded = tok.decode(enc.ids, skip_special_tokens=False)
        cases.append({"text": text, "ids": enc.ids, "tokens": enc.tokens, "decoded": decoded})
    return cases


def bytes_to_unicode_char(b):
    # Same table the library uses; only used to look up the id of a single-byte token.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for x in range(256):
        if x not in bs:
            bs.append(x)
            cs.append(256 + n)
            n += 1
    return chr(dict(zip(bs, cs))[b])


def decode_only_cases(tok):
    def byte_id(b):
        i = tok.token_to_id(bytes_to_unicode_char(b))
        assert i is not None, b
        return i

    euro = "€".encode()  # e2 82 ac
    seqs = [
        [byte_id(euro[0])],
        [byte_id(euro[0]), byte_id(euro[1])],
        [byte_id(euro[0]), byte_id(euro[1]), byte_id(euro[2])],
        [byte_id(euro[1]), byte_id(euro[2])],
        [byte_id(ord("a")), byte_id(euro[0]), byte_id(ord("b"))],
        [byte_id(0xFF), byte_id(0xFE)],
        [byte_id(0xC0), byte_id(0x80)],
        [byte_id(0xED), byte_id(0xA0), byte_id(0x80)],
        [byte_id(0xF0), byte_id(0x9F), byte_id(0x98)],
        [byte_id(0xF0), byte_id(0x9F), byte_id(0x98), byte_id(0x80)],
        [byte_id(0xF4), byte_id(0x90), byte_id(0x80), byte_id(0x80)],
        [0, byte_id(0xE2), 1, byte_id(0x82), byte_id(0xAC)],
        [5000, byte_id(ord("z")), 999999],
    ]
    # Split a multi-byte token of the trained vocabulary across other bytes.
    for text in ["我们", "é", "Привет", "😀"]:
        ids = tok.encode(text).ids
        seqs.append(ids[:-1] + [byte_id(ord("x"))] + ids[-1:])
        seqs.append(ids[1:])
    cases = []
    for s in seqs:
        try:
            decoded = tok.decode(s, skip_special_tokens=False)
        except Exception as e:  # noqa: BLE001
            print("decode-only case", s, "skipped:", repr(e), file=sys.stderr)
            continue
        cases.append({"text": None, "ids": s, "decoded": decoded, "decode_only": True})
    return cases


def make_flags(base):
    tok = Tokenizer.from_str(base.to_str())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)])
    tok.add_special_tokens([
        AddedToken("<mask>", special=True, normalized=False, lstrip=True),
        AddedToken("<SEP>", special=True, normalized=True),
    ])
    tok.add_tokens([
        AddedToken("[R]", special=False, normalized=False, rstrip=True),
        AddedToken("[LR]", special=False, normalized=False, lstrip=True, rstrip=True),
        AddedToken("qq", special=False, normalized=False, single_word=True),
        AddedToken("\ufb01x", special=False, normalized=True),
        AddedToken("\u216b", special=False, normalized=False),
        AddedToken("ABC", special=False, normalized=True),
    ])
    texts = [
        "", "Hello world", " Hello", "hello  world", "x <mask> y", "x<mask>y", "x   <mask>   y",
        "<mask>", "  <mask>", "a[R]  b", "a [R]b", "a  [LR]  b", "[LR]", "qq", "qq qq", "aqq qqb",
        " qq ", "qq.", "(qq)", "qqq", "\ufb01x it", "fix it", "\ufb01\u0078\u0301", "\u216b",
        "XII", "\u216b\u216b x", "\uff21\uff22\uff23", "ABC", "xABCx", "a<SEP>b", "a<SEP> b",
        "<|endoftext|> <|endoftext|>", "\uff1c|endoftext|\uff1e", "Cafe\u0301 \u2460 \u00bd",
        "The quick brown fox", "  spaces  ", "\n\nnew", "caf\u00e9<mask>",
        "\u00a0<mask>", "\u3000<mask>\u3000x", "a\u00a0[R]\u00a0b",
    ]
    return tok, encode_cases(tok, texts)


def make_noregex(base):
    tok = Tokenizer.from_str(base.to_str())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=False)
    texts = ["", "Hello world", "The quick brown fox jumps over the lazy dog.", "a  b",
             "it's 123 456", "Cafe\u0301 café", "a<|endoftext|>b c", "  x  \n"]
    return tok, encode_cases(tok, texts)


# Code point pools for random texts: every class the split pattern and the added-token rules
# distinguish, with whitespace and marks over-represented because that is where rules differ.
FUZZ_POOLS = [
    (30, [chr(c) for c in range(0x20, 0x7F)]),
    (12, list(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029"
              "\u202f\u205f\u3000\u180e\u200b\ufeff")),
    (8, [" " * n for n in range(2, 12)]),
    (6, ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "''", "'"]),
    (6, [chr(c) for c in range(0x300, 0x370)] + ["\u0e31", "\u093f", "\u20dd", "\ufe0f", "\u200d"]),
    (6, [chr(c) for c in range(0xA1, 0x180)]),
    (4, [chr(c) for c in range(0x391, 0x3CA)] + [chr(c) for c in range(0x410, 0x450)]),
    (4, [chr(c) for c in range(0x4E00, 0x4E40)] + [chr(c) for c in range(0xAC00, 0xAC20)]
     + [chr(c) for c in range(0x1100, 0x1112)] + [chr(c) for c in range(0x1161, 0x1170)]),
    (3, [chr(c) for c in range(0x600, 0x670)] + [chr(c) for c in range(0x905, 0x940)]
     + [chr(c) for c in range(0xE01, 0xE3A)]),
    (3, [chr(c) for c in range(0x660, 0x66A)] + [chr(c) for c in range(0xFF10, 0xFF1A)]
     + [chr(c) for c in range(0x2160, 0x2183)] + [chr(c) for c in range(0x2460, 0x2474)]
     + list("\xb2\xb3\xb9\xbc\xbd\xbe\u2070\u2074")),
    (3, list("\u01c5\u01c8\u1f88\u02b0\u02b2\u3005\u30fc\uff21\uff41\ufb01\ufb02\u2126\u212b")),
    (4, ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469",
         "\U0001F1FA\U0001F1F8", "\U0001F3F3\ufe0f\u200d\U0001F308", "1\ufe0f\u20e3",
         "\U0001D573", "\ue000", "\U00010000"]),
    (5, ["<|endoftext|>", "<|padding|>", "<|endo", "ftext|>", "<|", "|>", "<|user|>",
         "<|assistant|>", "<mask>", "<SEP>", "[R]", "[LR]", "qq", "\ufb01x", "\u216b", "ABC",
         "\uff21\uff22\uff23"]),
    (6, ["the", "The", "Hello", "world", "caf\u00e9", "cafe\u0301", "123", "4567890", "red",
         "is", "a", "Mamba", "_x", "x_"]),
]


def random_text(rng):
    weights = [w for w, _ in FUZZ_POOLS]
    n = rng.randint(0, 24)
    parts = []
    for _ in range(n):
        pool = rng.choices(FUZZ_POOLS, weights=weights)[0][1]
        parts.append(rng.choice(pool))
    return "".join(parts)


def fuzz_cases(tok, rng, n_texts, n_id_lists):
    texts = [random_text(rng) for _ in range(n_texts)]
    cases = [{"text": c["text"], "ids": c["ids"], "decoded": c["decoded"]}
             for c in encode_cases(tok, texts)]
    size = tok.get_vocab_size(with_added_tokens=True)
    for _ in range(n_id_lists):
        ids = [rng.randrange(size) for _ in range(rng.randint(0, 12))]
        cases.append({"text": None, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decode_only": True})
    return cases


def write(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print("tokenizers", tokenizers.__version__)

    base = train_base()
    n_ids = base.get_vocab_size(with_added_tokens=True)
    print("total ids", n_ids, "model vocab", base.get_vocab_size(with_added_tokens=False))
    assert n_ids < MAX_IDS, n_ids
    assert base.token_to_id("<|endoftext|>") == 0 and base.token_to_id("<|padding|>") == 1

    base.save(os.path.join(args.out, "tokenizer.json"), pretty=True)
    cases = encode_cases(base, HARD_CASES) + decode_only_cases(base)
    write(os.path.join(args.out, "cases.json"), cases)
    print("cases", len(cases))

    fuzz = {"main": fuzz_cases(base, random.Random(2024), 3000, 500)}
    # The variants exercise options the NeoX file does not use; a failure there must not cost the
    # main fixture.
    for name, maker in (("flags", make_flags), ("noregex", make_noregex)):
        try:
            tok, vcases = maker(base)
            tok.save(os.path.join(args.out, name + "_tokenizer.json"), pretty=True)
            write(os.path.join(args.out, name + "_cases.json"), vcases)
            print(name, "cases", len(vcases))
            fuzz[name] = fuzz_cases(tok, random.Random(len(name)), 1500, 100)
        except Exception as e:  # noqa: BLE001
            print(name, "variant failed:", repr(e), file=sys.stderr)

    with open(os.path.join(args.out, "fuzz_cases.json"), "w", encoding="utf-8") as f:
        json.dump(fuzz, f, ensure_ascii=False)
        f.write("\n")
    print("fuzz cases", {k: len(v) for k, v in fuzz.items()})

    for c in cases[:12]:
        print(repr(c["text"]), c["tokens"] if "tokens" in c else c["ids"])


if __name__ == "__main__":
    main()
