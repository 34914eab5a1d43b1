"""Nothing lost, nothing garbled, nothing trusted that was not checked (docs/security.md, the
promise table): each test is named after the promise it keeps."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipxai.errors import BundleError, ClipxaiError, WeightsError
from tiny import TINY

av = pytest.importorskip("av")


# ---------------------------------------------------------------- a video that ends early says so

def _video(path: Path, codec="mpeg4", n=30, options=None, audio_seconds=0.0, rate=12) -> Path:
    """n frames of noise (every frame its own bytes, so a cut loses frames), optionally with a
    longer sound track."""
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=8000) if audio_seconds else None
        for i in range(n):
            img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            sound = av.AudioFrame.from_ndarray(np.zeros((1, int(8000 * audio_seconds)), np.float32),
                                               format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 8000, 0
            for p in [*a.encode(sound), *a.encode()]:
                c.mux(p)
    return path


def _read(path):
    """(frames read, the VideoError or None)."""
    from clipxai.runtime.video.sources import VideoError, video_frames
    got = []
    try:
        for frame in video_frames(path):
            got.append(frame.index)
    except VideoError as e:
        return got, e
    return got, None


CUT_KINDS = {  # name: (suffix, codec, muxer options): index at the start, index per cluster, header count
    "mp4-index-first-mpeg4": (".mp4", "mpeg4", {"movflags": "faststart"}),
    "mp4-index-first-h264": (".mp4", "h264", {"movflags": "faststart"}),
    "mkv-mpeg4": (".mkv", "mpeg4", {}),
    "mkv-h264": (".mkv", "h264", {}),
    "avi-mpeg4": (".avi", "mpeg4", {}),
}


@pytest.mark.parametrize("fraction", [0.3, 0.55, 0.9])  # cut mid-packet: at no packet boundary
@pytest.mark.parametrize("kind", sorted(CUT_KINDS))
def test_a_video_that_ends_early_says_so_after_the_frames_it_has(tmp_path, kind, fraction):
    suffix, codec, options = CUT_KINDS[kind]
    whole = _video(tmp_path / f"whole{suffix}", codec, options=options)
    blob = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(blob[: int(len(blob) * fraction)])
    got, error = _read(cut)
    assert error is not None, f"{kind} cut at {fraction}: {len(got)} of 30 frames and no word"
    assert error.stopped_at == len(got) and got == list(range(len(got))) and 0 < len(got) < 30
    assert re.search(r"stopped at frame \d+, (the file ends early|the rest does not decode)", str(error))
    assert "\n" not in str(error)


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_a_video_whose_index_at_the_end_is_cut_off_is_a_one_line_error(tmp_path, codec):
    whole = _video(tmp_path / "whole.mp4", codec)  # moov atom at the end: the cut loses it
    blob = whole.read_bytes()
    for fraction in (0.3, 0.6, 0.9, 0.99):
        cut = tmp_path / "cut.mp4"
        cut.write_bytes(blob[: int(len(blob) * fraction)])
        got, error = _read(cut)
        assert error is not None and not got and "\n" not in str(error)


def _stream_copied_cut(src: Path, out: Path, skip_frames: int, rate=12) -> Path:
    """What `ffmpeg -ss T -c copy` makes: the packets before T kept but hidden by an edit list."""
    with av.open(str(src)) as i, av.open(str(out), "w") as o:
        si = i.streams.video[0]
        so = o.add_stream_from_template(si)
        shift = int(skip_frames / rate / si.time_base)
        for p in i.demux(si):
            if p.dts is None:
                continue
            p.pts, p.dts, p.stream = p.pts - shift, p.dts - shift, so
            o.mux(p)
    return out


def test_a_whole_video_is_never_reported_as_cut(tmp_path):
    """No false alarm: every container whole, a sound track longer than the video, a stream-copied
    cut whose edit list hides frames the header still counts, and formats that declare no length."""
    files = [_video(tmp_path / f"{k}{suffix}", codec, options=opts) for k, (suffix, codec, opts) in CUT_KINDS.items()]
    files += [_video(tmp_path / "index-last.mp4", "h264"), _video(tmp_path / "v.ts", "mpeg4"),
              _video(tmp_path / "frag.mp4", "h264", options={"movflags": "frag_keyframe+empty_moov"}),
              _video(tmp_path / "sound.mkv", "mpeg4", audio_seconds=4.0),
              _video(tmp_path / "sound.mp4", "h264", options={"movflags": "faststart"}, audio_seconds=4.0)]
    for codec in ("mpeg4", "h264"):
        files.append(_stream_copied_cut(files[0 if codec == "mpeg4" else 1], tmp_path / f"copy-{codec}.mp4", 5))
    for path in files:
        got, error = _read(path)
        assert error is None, f"{path.name}: {error}"
        assert len(got) == (25 if path.name.startswith("copy-") else 30), path.name


# ---------------------------------------------------------------- text in any script survives

SCRIPTS = {  # what the user wrote -> the words an explanation must show (CLIP's clean-up: lower case, NFC)
    "hebrew with points and right-to-left marks": ("\u200fשָׁלוֹם עולם\u200f", ["\u200fשָׁלוֹם", "עולם\u200f"]),
    "arabic with vowel marks": ("كَتَبَ الوَلَدُ", ["كَتَبَ", "الوَلَدُ"]),
    "persian with a zero-width non-joiner": ("می\u200cخواهم", ["می\u200cخواهم"]),
    "chinese": ("我爱北京 天安门", ["我爱北京", "天安门"]),
    "japanese": ("東京タワーへ行く 寿司", ["東京タワーへ行く", "寿司"]),
    "devanagari": ("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]),
    "combining accents": ("Cafe\u0301 İstanbul", ["café", "i̇stanbul"]),
    "emoji": ("👍🏽 ❤️ 👨\u200d👩\u200d👧 🇮🇱", ["👍🏽", "❤️", "👨\u200d👩\u200d👧", "🇮🇱"]),
    "mixed": ("a 🐶 on \u200fשלום\u200e street", ["a", "🐶", "on", "\u200fשלום\u200e", "street"]),
}


class _UniformGraph:
    """The word-explainer graph's interface, every token weighted alike (the words are under test)."""

    def run(self, names, feeds):
        from clipxai.contract import TEXT_INPUT_EOT
        eot = feeds[TEXT_INPUT_EOT]
        weights = np.zeros((len(eot), 77), np.float32)
        for row, e in enumerate(eot):
            weights[row, 1:e] = 1.0 / (e - 1)
        return weights, np.full(len(eot), 0.25, np.float32)


@pytest.fixture(scope="module")
def word_explainer():
    from clipxai.runtime.explain.text import WordExplainer
    from clipxai.runtime.text.tokenizer import load_tokenizer
    return WordExplainer(_UniformGraph(), load_tokenizer())


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_text_in_any_script_survives_in_words_tokens_and_json(word_explainer, script):
    from clipxai.runtime.text.tokenizer import clean_text
    text, want = SCRIPTS[script]
    (e,) = word_explainer.explain(np.zeros(8, np.float32), [text])
    words = [w for w, _ in e.words()]
    assert words == want
    assert "".join(e.tokens) == "".join(clean_text(text).split())  # the pieces spell the text, nothing lost
    record = e.to_json()
    dumped = json.dumps(record, ensure_ascii=False)
    assert "\ufffd" not in dumped and "\ufffd" not in "".join(words)
    assert [w["word"] for w in json.loads(json.dumps(record))["words"]] == want
    assert b"".join(bytes.fromhex(t["bytes"]) for t in record["tokens"]) == "".join(want).encode()
    assert abs(sum(w for _, w in e.words()) - 1) < 1e-5


def test_words_read_as_clip_cleaned_the_text(word_explainer):
    """Lower case, HTML entities decoded, whitespace collapsed: what CLIP read (docs/explain.md)."""
    (e,) = word_explainer.explain(np.zeros(8, np.float32), ["A  DOG &amp; a Cat, 2024!"])
    assert [w for w, _ in e.words()] == ["a", "dog", "&", "a", "cat", ",", "2", "0", "2", "4", "!"]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_words_picture_draws_every_script_or_says_it_cannot(word_explainer, script):
    from clipxai.runtime.explain import render
    (e,) = word_explainer.explain(np.zeros(8, np.float32), [SCRIPTS[script][0]])
    for word, _ in e.words():
        text, font, fell_back = render.label(word, 22)
        assert "\ufffd" not in text
        assert fell_back == (text == render.code_points(word)) and render._has_glyphs(font, text)
    picture = render.words_image(e, width=300)
    assert picture.mode == "RGB" and picture.width == 300


def test_the_words_picture_uses_a_font_that_has_the_script(monkeypatch):
    """Pillow's own font has no Hebrew, Arabic or even é: a system font that has them is used. Without
    libraqm a right-to-left word is put in visual order, its marks kept on their letters."""
    from clipxai.runtime.explain import render
    monkeypatch.setattr(render, "_raqm", lambda: False)
    assert render._visual_order("שלום") == "םולש" and render._visual_order("שָׁלוֹם")[-3:] == "שָׁ"
    assert render._visual_order("dog") == "dog"
    monkeypatch.undo()
    if not any(p.name == "DejaVuSans.ttf" for p in render.font_files()):
        pytest.skip("DejaVu Sans is not installed here")
    for word in ("שָׁלוֹם", "كَتَبَ", "café", "ωμέγα", "привет"):
        text, font, fell_back = render.label(word, 22)
        assert not fell_back and Path(getattr(font, "path", "")).name == "DejaVuSans.ttf"


def test_an_over_long_text_is_refused_with_one_token_count():
    from clipxai.runtime.explain.text import token_row
    from clipxai.runtime.text.tokenizer import load_tokenizer
    tok = load_tokenizer()
    for text in (" ".join(["word"] * 80), "东京" * 60, "שָׁלוֹם " * 40):
        with pytest.raises(ClipxaiError) as e:
            token_row(tok, text, truncate=False)
        message = str(e.value)
        total = len(tok.encode(text))
        counts = {int(n) for n in re.findall(r"the text is (\d+) tokens|token 75 of (\d+)", message) for n in n if n}
        assert counts == {total}, message
        assert "\ufffd" not in message and "\n" not in message


# ---------------------------------------------------------------- a file is vouched for only by the hash that saw it

class _WriterDuringHash:
    """A writer that changes ``target`` while it is being hashed: once the hasher has been fed all
    of the file's bytes, and before the hash is taken, the file is rewritten (same size, new
    contents and times)."""

    def __init__(self, monkeypatch, target: Path):
        import hashlib

        from clipxai.common import files
        self.target, self.original, self.fired = target, target.read_bytes(), False
        writer = self

        class Hasher:
            def __init__(self):
                self._h, self._offset, self._same = hashlib.sha256(), 0, True

            def update(self, block):
                self._h.update(block)
                block = bytes(block)
                self._same &= block == writer.original[self._offset:self._offset + len(block)]
                self._offset += len(block)
                if self._same and self._offset == len(writer.original) and not writer.fired:
                    writer.change()

            def hexdigest(self):
                return self._h.hexdigest()

        shim = type(hashlib)("hashlib")
        shim.sha256 = Hasher
        monkeypatch.setattr(files, "hashlib", shim)

    def change(self):
        self.fired = True
        st = self.target.stat()
        self.target.write_bytes((np.frombuffer(self.original, np.uint8) ^ 0xFF).tobytes())
        os.utime(self.target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("rel") / "b", classes=["sky", "box"],
                                      backbone=TINY.name, pretrained="random", image_size=32)).path


def test_a_file_changed_during_its_hash_is_never_stamped_as_verified(bundle, tmp_path, monkeypatch):
    from clipxai.runtime.bundle import load_bundle
    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    stamps = tmp_path / "stamps"
    writer = _WriterDuringHash(monkeypatch, copy / "model.onnx.data")  # not parsed at load: only hashed
    try:
        load_bundle(copy, stamps=stamps)
    except BundleError as e:
        assert "model.onnx.data" in str(e)
    assert writer.fired
    monkeypatch.undo()
    # whatever the first load said, the changed file was not stamped: the next load hashes it
    with pytest.raises(BundleError, match="sha256 does not match"):
        load_bundle(copy, stamps=stamps)


def test_a_graph_cache_file_changed_during_its_hash_is_never_trusted(tmp_path, monkeypatch):
    from clipxai.common.files import sha256_file
    from clipxai.runtime.cpu import graph_cache as gc
    key = {"format": "test"}
    entry = gc.entry_dir(tmp_path, key)
    entry.mkdir(parents=True)
    for name in (gc.GRAPH_FILE, gc.DATA_FILE):
        (entry / name).write_bytes(os.urandom(4096))
    gc._write_record(entry, key, {"files": gc._seal(entry)})
    data = entry / gc.DATA_FILE
    os.utime(data, ns=(0, 10**18))  # same bytes, another fingerprint: the next lookup hashes it
    writer = _WriterDuringHash(monkeypatch, data)
    first = gc.lookup(tmp_path, key)
    assert writer.fired
    monkeypatch.undo()
    second = gc.lookup(tmp_path, key)
    for found in (first, second):
        if found is not None:  # an entry returned must be the bytes its record vouches for
            record = json.loads((entry / gc.DONE_FILE).read_text())["files"][gc.DATA_FILE]
            assert sha256_file(data) == record["sha256"]
    # and the entry's own record is written from the fingerprint taken before its hash
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / gc.GRAPH_FILE).write_bytes(os.urandom(4096))
    (fresh / gc.DATA_FILE).write_bytes(os.urandom(4096))
    _WriterDuringHash(monkeypatch, fresh / gc.DATA_FILE)
    record = gc._seal(fresh)[gc.DATA_FILE]
    monkeypatch.undo()
    from clipxai.common.files import stat_fingerprint
    now = fresh / gc.DATA_FILE
    assert record["stat"] != stat_fingerprint(now) or record["sha256"] == sha256_file(now)


def test_an_unsafe_stamp_folder_is_reported_once_and_the_bundle_loads_without_it(bundle, tmp_path, caplog):
    from clipxai.common import cache
    from clipxai.runtime.bundle import load_bundle
    cache._reported.clear()
    stamps = tmp_path / "stamps"
    stamps.mkdir(mode=0o700)
    os.chmod(stamps, 0o777)  # others may write: never used
    caplog.set_level(logging.WARNING, logger="clipxai")
    assert load_bundle(bundle, stamps=stamps).hashed
    assert load_bundle(bundle, stamps=stamps).hashed
    warnings = [r for r in caplog.records if "stamps not used" in r.getMessage()]
    assert len(warnings) == 1 and "writable by other users" in warnings[0].getMessage()
    assert not list(stamps.iterdir())


# ---------------------------------------------------------------- weak points

class _Custom:
    """An object in a checkpoint: torch.load(weights_only=True) refuses it."""

def test_max_pixels_governs_image_files_not_pillows_own_limit(tmp_path, monkeypatch):
    from clipxai.runtime.preprocess import open_image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if these were 89.5 MP and 179 MP
    for w, h in ((40, 30), (60, 50)):  # above Pillow's warning, above its error
        path = tmp_path / f"{w}x{h}.png"
        Image.new("RGB", (w, h), (10, 20, 30)).save(path)
        assert open_image(path, max_pixels=10_000).size == (w, h)
        with pytest.raises(ClipxaiError, match=r"above the .* MP limit .*raise the limit with max_pixels="):
            open_image(path, max_pixels=500)
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back


def test_a_checkpoint_with_objects_is_refused_without_torchs_unsafe_advice(tmp_path):
    torch = pytest.importorskip("torch")
    from clipxai.models.loading import read_checkpoint
    from clipxai.models.pickled import load_tensors_only
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "config": _Custom()}, path)
    from clipxai.models.sam import read_mask_checkpoint
    from tiny_sam import TINY_SAM
    for load in (load_tensors_only, read_checkpoint, lambda p: read_mask_checkpoint(p, TINY_SAM)):
        with pytest.raises(WeightsError) as e:
            load(path)
        message = str(e.value)
        assert "model.pt: not a plain weights file" in message and "safetensors" in message
        assert "weights_only=False" not in message and "\x1b" not in message and "\n" not in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="junk.pt: not a readable checkpoint"):
        load_tensors_only(tmp_path / "junk.pt")


def test_overwrite_replaces_only_a_bundle(bundle, tmp_path):
    from clipxai.export.bundle import check_output
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ClipxaiError, match=r"is not a bundle \(no readable manifest.json\); --overwrite replaces only"):
        check_output(mine, overwrite=True)
    (mine / "manifest.json").write_text('{"name": "my app"}')
    with pytest.raises(ClipxaiError, match="not a bundle manifest"):
        check_output(mine, overwrite=True)
    extra = Path(shutil.copytree(bundle, tmp_path / "b"))
    check_output(extra, overwrite=True)  # a bundle: replaced
    (extra / "notes.txt").write_text("mine")
    with pytest.raises(ClipxaiError, match="holds 'notes.txt', which its manifest does not list"):
        check_output(extra, overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(empty, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"


def test_both_exporters_refuse_to_overwrite_a_folder_that_is_not_a_bundle(tmp_path):
    pytest.importorskip("torch")
    from clipxai.export.pipeline import ExportConfig, export_bundle
    from clipxai.export.sam import SamExportConfig, export_mask_bundle
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ClipxaiError, match="is not a bundle") as e:
        export_bundle(ExportConfig(output=mine, classes=["a", "b"], backbone=TINY.name, pretrained="random",
                                   image_size=32, overwrite=True))
    assert "\n" not in str(e.value)
    import tiny_sam  # noqa: F401  (registers tiny-sam)
    with pytest.raises(ClipxaiError, match="is not a bundle"):
        export_mask_bundle(SamExportConfig(model="tiny-sam", checkpoint=tmp_path / "unused.pth", output=mine,
                                           overwrite=True))
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


# ---------------------------------------------------------------- output names never collide

ROCKET = Path(__file__).parent.parent / "examples" / "rocket.jpg"


def _segment(*args):
    from click.testing import CliRunner
    from clipxai.cli.segment import segment
    return CliRunner().invoke(segment, [str(a) for a in args])


@pytest.fixture(scope="module")
def meeting_bundle(tmp_path_factory):
    """Classes whose plain file names would meet: "a b" / "a_b", "Sky" / "sky"; one in Hebrew."""
    from clipxai.export.pipeline import ExportConfig, export_bundle
    return export_bundle(ExportConfig(output=tmp_path_factory.mktemp("names") / "b", text_encoder=True,
                                      classes=["sky", "box"], backbone=TINY.name, pretrained="random",
                                      image_size=32)).path


def test_output_names_never_collide_between_classes(meeting_bundle, tmp_path):
    from clipxai.runtime.outputs import unique_names
    names = unique_names(["a b", "a_b", "Sky", "sky", "עץ", "猫 cat", "dog"])
    assert len({n.casefold() for n in names.values()}) == 7  # distinct even on a case-insensitive disk
    assert names["dog"] == "dog" and names["עץ"] == "עץ" and names["猫 cat"] == "猫_cat"  # readable kept
    assert names == unique_names(["dog", "猫 cat", "עץ", "sky", "Sky", "a_b", "a b"])  # stable
    out = tmp_path / "out"
    r = _segment(meeting_bundle, ROCKET, "--out", out, "--classes", "a b,a_b,עץ")
    assert r.exit_code == 0, r.output
    record = json.loads((out / "rocket.json").read_text(encoding="utf-8"))
    heatmaps = record["files"]["heatmaps"]
    assert set(heatmaps) == {"a b", "a_b", "עץ"} and len(set(heatmaps.values())) == 3
    assert heatmaps["עץ"] == "rocket_heatmap_עץ.png"
    assert sorted(p.name for p in out.glob("rocket_heatmap_*.png")) == sorted(heatmaps.values())
    assert record["files"]["segmentation"] == "rocket_segmentation.png"


def test_output_names_never_collide_between_sources(meeting_bundle, tmp_path):
    from clipxai.apps.segment.inputs import output_names
    src = tmp_path / "in"
    src.mkdir()
    for name in ("x.jpg", "X.jpg", "x.png", "y.jpg"):
        Image.open(ROCKET).convert("RGB").resize((40, 30)).save(src / name)
    files = sorted(src.iterdir())
    names = output_names(files)
    assert len({str(n).casefold() for n in names.values()}) == 4 and names[src / "y.jpg"] == Path("y")
    assert names == output_names(list(reversed(files)))  # stable, whatever the order
    out = tmp_path / "out"
    r = _segment(meeting_bundle, src, "--out", out, "--no-overlays")
    assert r.exit_code == 0, r.output
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sorted(Path(r["image"]).name for r in records) == ["X.jpg", "x.jpg", "x.png", "y.jpg"]


def test_a_camera_never_takes_a_video_s_name():
    from clipxai.apps.segment.inputs import output_names
    from clipxai.apps.segment.videos import camera_name
    taken = [str(n) for n in output_names([Path("/v/Camera0.mp4"), Path("/v/drive.mp4")]).values()]
    assert camera_name(0, taken) not in ("camera0", "Camera0") and camera_name(0, taken).startswith("camera0-")
    assert camera_name(0, taken) == camera_name(0, taken)  # stable
    assert camera_name(1, taken) == "camera1" and camera_name(0, ["drive"]) == "camera0"


def test_two_runs_never_write_to_one_folder_at_once(meeting_bundle, tmp_path):
    from clipxai.common.files import OUTPUT_LOCK, exclusive_output
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_output(out):  # another run holds the folder
        r = _segment(meeting_bundle, ROCKET, "--out", out)
        assert r.exit_code == 2 and "another clipxai run is writing to" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not list(out.glob("*.json"))
    r = _segment(meeting_bundle, ROCKET, "--out", out)  # free again
    assert r.exit_code == 0, r.output
    assert not (out / OUTPUT_LOCK).exists()


# ---------------------------------------------------------------- cache clear clears what it says

def test_cache_clear_removes_every_cache_stamps_included(bundle, tmp_path):
    from click.testing import CliRunner
    from clipxai.cli.cache import cache
    from clipxai.common.cache import CACHES
    from clipxai.runtime import Predictor
    root = tmp_path / "cache"
    Predictor.from_bundle(bundle, providers="cpu", graph_cache="sync", cache_dir=root,
                          stamps=root / "verified")
    (root / "text").mkdir(mode=0o700)
    (root / "text" / "x.npz").write_bytes(b"0" * 2048)
    assert (root / "graphs").is_dir() and any((root / "verified").iterdir())
    r = CliRunner().invoke(cache, ["clear", "--cache-dir", str(root)])
    assert r.exit_code == 0, r.output
    for name in ("graphs", "text", "verified"):
        assert not (root / name).exists() and re.search(rf"^{name} .*: removed", r.output, re.M), r.output
    assert re.search(r"^engines .*: absent$", r.output, re.M)
    assert re.search(r"^openvino .*: absent$", r.output, re.M)
    assert set(CACHES) == {"graphs", "text", "engines", "openvino", "verified"}


def test_cache_clear_keeps_what_it_is_told_and_never_follows_a_link(tmp_path):
    from click.testing import CliRunner
    from clipxai.cli.cache import cache
    root, elsewhere = tmp_path / "cache", tmp_path / "precious"
    (root / "graphs").mkdir(parents=True)
    (root / "text").mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (root / "verified").symlink_to(elsewhere)
    r = CliRunner().invoke(cache, ["clear", "--cache-dir", str(root), "--keep", "text"])
    assert r.exit_code == 0, r.output
    assert (root / "text").is_dir() and not (root / "graphs").exists()
    assert re.search(r"^text .*: kept$", r.output, re.M)
    assert re.search(r"^verified .*: left alone: a symbolic link", r.output, re.M)  # not "removed"
    assert (elsewhere / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- --actors is clamped to the work

def test_actors_are_clamped_to_the_work_and_the_cpus():
    from clipxai.cluster.pool import actor_count
    from clipxai.common.report import Reporter

    class Notes(Reporter):
        def __init__(self):
            self.notes = []

        def note(self, message):
            self.notes.append(message)
    notes = Notes()
    assert actor_count(64, cpus=2, threads=1, batches=3, reporter=notes) == 2
    assert "--actors 64: starting 2" in notes.notes[0]
    assert actor_count(None, cpus=8, threads=2, batches=10, reporter=notes) == 4
    assert actor_count(None, cpus=8, threads=1, batches=3, reporter=notes) == 3
    assert actor_count(2, cpus=8, threads=1, batches=5, reporter=notes) == 2 and len(notes.notes) == 1
