"""The Qwen2 byte-level BPE vocabulary of a MiniCPM-V 2.6 checkpoint as GGUF tokenizer metadata
(tokenizer.ggml.model = gpt2, pre = qwen2), as llama.cpp's converter lays it out."""
from pathlib import Path

from .checkpoint import read_json

# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# ChatML with Qwen2's default-system rule (spec 8.3): used when tokenizer_config.json has none.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class Vocab:
    def __init__(self, tokens, token_types, merges, bos, eos, unk, pad, chat_template):
        self.tokens = tokens
        self.token_types = token_types
        self.merges = merges
        self.bos, self.eos, self.unk, self.pad = bos, eos, unk, pad
        self.chat_template = chat_template


def _token_content(v):
    return v["content"] if isinstance(v, dict) else str(v)


def load_vocab(hf_dir, vocab_size, config):
    """Tokens (id order, padded to vocab_size), types, merges and special ids of `hf_dir`."""
    d = Path(hf_dir)
    tok_cfg = read_json(d / "tokenizer_config.json", "tokenizer config")
    tok_json = None  # tokenizer.json is parsed only when the plain files lack something (it is large)

    def tokenizer_json():
        nonlocal tok_json
        if tok_json is None and (d / "tokenizer.json").is_file():
            tok_json = read_json(d / "tokenizer.json", "tokenizer")
        return tok_json

    # Regular BPE tokens: vocab.json, or the model section of tokenizer.json.
    if (d / "vocab.json").is_file():
        vocab = read_json(d / "vocab.json", "BPE vocabulary")
    elif tokenizer_json() is not None and isinstance(tok_json.get("model", {}).get("vocab"), dict):
        vocab = tok_json["model"]["vocab"]
    else:
        raise FileNotFoundError(f"{d / 'vocab.json'}: BPE vocabulary not found (nor in tokenizer.json)")

    # Added tokens: tokenizer_config.json's added_tokens_decoder, else tokenizer.json's added_tokens.
    added = {}  # id -> (content, special)
    dec = tok_cfg.get("added_tokens_decoder")
    if isinstance(dec, dict):
        for k, v in dec.items():
            added[int(k)] = (_token_content(v), bool(v.get("special", False)) if isinstance(v, dict) else False)
    elif tokenizer_json() is not None:
        for v in tok_json.get("added_tokens", []):
            added[int(v["id"])] = (v["content"], bool(v.get("special", False)))

    reverse = {}
    for tok, i in vocab.items():
        reverse[int(i)] = tok
    for i, (content, _) in added.items():
        reverse[i] = content
    max_id = max(reverse) if reverse else -1
    if max_id >= vocab_size:
        raise ValueError(f"{d}: token id {max_id} ({reverse[max_id]!r}) is outside vocab_size {vocab_size} of config.json")

    del vocab
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")  # as llama.cpp: unused ids get a placeholder
            types.append(UNUSED)
        elif i in added:
            content, special = added[i]
            tokens.append(content)
            # llama.cpp marks special added tokens (and ones that look like <|...|>) as control
            looks_special = content.startswith("<|") and content.endswith("|>")
            types.append(CONTROL if (special or looks_special) else USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(NORMAL)

    merges = _load_merges(d, tokenizer_json)

    ids = {t: i for i, t in enumerate(tokens)}

    def special_id(key):
        v = tok_cfg.get(key)
        if v is None:
            return None
        content = _token_content(v)
        if content not in ids:
            raise ValueError(f"{d / 'tokenizer_config.json'}: {key} {content!r} is not in the vocabulary")
        return ids[content]

    bos, eos, unk, pad = (special_id(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token"))
    # As gguf-py's SpecialVocab: ids missing from the tokenizer files come from config.json.
    bos = bos if bos is not None else config.get("bos_token_id")
    eos = eos if eos is not None else config.get("eos_token_id")
    pad = pad if pad is not None else config.get("pad_token_id")
    if isinstance(eos, list):
        eos = eos[0]

    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not template and (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    if not template:
        template = DEFAULT_CHAT_TEMPLATE
    return Vocab(tokens, types, merges, bos, eos, unk, pad, template)


def _load_merges(d, tokenizer_json):
    path = d / "merges.txt"
    if path.is_file():
        merges = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                line = line.rstrip("\n")
                if n == 0 and line.startswith("#version"):
                    continue
                if not line:
                    continue
                if len(line.split(" ")) != 2:
                    raise ValueError(f"{path}: line {n + 1} is not a merge pair: {line!r}")
                merges.append(line)
        return merges
    tok_json = tokenizer_json()
    if tok_json is not None:
        raw = tok_json.get("model", {}).get("merges")
        if isinstance(raw, list):
            return [" ".join(m) if isinstance(m, list) else m for m in raw]
    raise FileNotFoundError(f"{path}: BPE merges not found (nor in tokenizer.json)")
