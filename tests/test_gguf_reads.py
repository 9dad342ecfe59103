"""`engines.convert.shared_gguf_reads`: one parse of a GGUF per conversion instead of three (transformers
reads the file for the tokenizer, the config and the weights). The conversion's own output is pinned
by tests/test_convert.py (every tensor against a direct GGUF load); these pin the sharing itself, on a
small GGUF written here with gguf's own writer."""

from __future__ import annotations

import gguf
import numpy as np

from cotforge.engines.convert import shared_gguf_reads


def tiny_gguf(path):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_one_reader_per_file_and_one_name_map_while_inside(tmp_path):
    first, second = tiny_gguf(tmp_path / "a.gguf"), tiny_gguf(tmp_path / "b.gguf")
    with shared_gguf_reads():
        reader = gguf.GGUFReader(str(first))
        assert gguf.GGUFReader(str(first)) is reader  # parsed once
        assert gguf.GGUFReader(str(second)) is not reader  # another file, its own parse
        assert np.array_equal(reader.tensors[0].data, np.arange(12, dtype=np.float32).reshape(3, 4))
        arch = gguf.MODEL_ARCH.LLAMA
        names = gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 2) is names
        assert gguf.get_tensor_name_map(arch, 3) is not names
        assert names.get_name("model.embed_tokens") == "token_embd"


def test_the_originals_are_back_after_the_block_even_when_it_raises(tmp_path):
    path = tiny_gguf(tmp_path / "a.gguf")
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    try:
        with shared_gguf_reads():
            raise RuntimeError("a failed load")
    except RuntimeError:
        pass
    assert gguf.GGUFReader is reader_class and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(str(path)) is not gguf.GGUFReader(str(path))  # no cache outside
