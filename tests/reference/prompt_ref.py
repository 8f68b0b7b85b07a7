"""An independent re-implementation of MiniCPM-V 2.6's reference prompt building (spec sections
6 and 7), written the way the Hugging Face code does it: render the conversation to one string
with the tokenizer's chat template (images as the text "(<image>./</image>)", content items
joined with "\\n"), replace each image marker by its placeholder string, and tokenize the whole
string with HF tokenizers. Used to check the engine's token ids."""

IMAGE_MARK = "(<image>./</image>)"


def image_placeholder(k, grid, query_num=64, use_image_id=True):
    unk = "<unk>" * query_num
    s = (f"<image_id>{k}</image_id>" if use_image_id else "") + "<image>" + unk + "</image>"
    if grid is not None:
        cols, rows = grid
        s += "\n".join("".join("<slice>" + unk + "</slice>" for _ in range(cols)) for _ in range(rows))
    return s


def reference_prompt_ids(hf_tokenizer, messages, grids, use_image_id=True, system_prompt="", query_num=64):
    """messages: [{"role", "content": [str | None (an image)]}]; grids: one per image, in order
    ((cols, rows) or None). hf_tokenizer: a transformers tokenizer loaded from the checkpoint dir."""
    msgs = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    for m in messages:
        content = m["content"] if isinstance(m["content"], list) else [m["content"]]
        msgs.append({"role": m["role"],
                     "content": "\n".join(IMAGE_MARK if c is None else c for c in content)})
    text = hf_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    parts = text.split(IMAGE_MARK)
    assert len(parts) == len(grids) + 1, "one grid per image"
    out = parts[0]
    for k, grid in enumerate(grids):
        out += image_placeholder(k, grid, query_num, use_image_id) + parts[k + 1]
    return hf_tokenizer.encode(out, add_special_tokens=False)
