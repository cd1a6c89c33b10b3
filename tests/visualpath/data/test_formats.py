import json

import pytest

from tests.visualpath.data.conftest import ramp_frames, write_video
from visualpath.data import (
    DatasetFormatError,
    read_hmdb51,
    read_kinetics_csv,
    read_path_label_list,
    read_ssv2,
    read_ucf101,
)


def _ucf(tmp_path):
    """UCF101's layout with the official quirks: CRLF, 1-based labels, a case mismatch."""
    root = tmp_path / "ucf"
    for folder, name in [("ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01.avi"),
                         ("ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c01.avi"),
                         ("HandstandPushups", "v_HandStandPushups_g08_c01.avi"),
                         ("HandstandPushups", "v_HandStandPushups_g01_c02.avi")]:
        (root / "UCF-101" / folder).mkdir(parents=True, exist_ok=True)
        (root / "UCF-101" / folder / name).write_bytes(b"x")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    (lists / "trainlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nHandStandPushups/v_HandStandPushups_g01_c02.avi\r\n")
    return root


def test_ucf101_official_lists(tmp_path):
    root = _ucf(tmp_path)
    train, classes = read_ucf101(root, 1, train=True)
    assert classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert [r.label for r in train] == [0, 1]  # 1-based on disk, 0-based here
    test, _ = read_ucf101(root, 1, train=False)
    assert [r.label for r in test] == [0, 1]
    assert all(r.path.is_file() for r in train + test)  # 'HandStandPushups/' resolved on disk


def test_ucf101_errors_name_the_file_and_the_format(tmp_path):
    root = _ucf(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"missing UCF101 train list: expected the file .*trainlist02.txt"):
        read_ucf101(root, 2)
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n")
    with pytest.raises(DatasetFormatError, match="listed with label 2 but its folder is class 1"):
        read_ucf101(root, 1)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("\r\n")
    with pytest.raises(DatasetFormatError, match="empty class list"):
        read_ucf101(root, 1)
    with pytest.raises(DatasetFormatError, match=r"expected the video folder .*UCF-101"):
        read_ucf101(tmp_path / "nowhere")


def test_hmdb51_split_files(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2 \n")
    train, classes = read_hmdb51(tmp_path / "videos", splits, 1, train=True)
    test, _ = read_hmdb51(tmp_path / "videos", splits, 1, train=False)
    assert classes == ["brush_hair", "cartwheel"]
    assert [(r.path.name, r.label) for r in train] == [("a.avi", 0)]
    assert [(r.path.name, r.label) for r in test] == [("b.avi", 0), ("d.avi", 1)]
    (splits / "cartwheel_test_split1.txt").write_text("d.avi train\n")
    with pytest.raises(DatasetFormatError, match=r"expected '<video>.avi <0\|1\|2>'"):
        read_hmdb51(tmp_path / "videos", splits, 1)
    with pytest.raises(DatasetFormatError, match="no '<class>_test_split2.txt' files"):
        read_hmdb51(tmp_path / "videos", splits, 2)


def test_kinetics_csv_nested_and_flat_layouts(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                   "abseiling,aaa,14,24,train,0\nzumba,bbb,0,10,train,0\n")
    (tmp_path / "videos" / "abseiling").mkdir(parents=True)
    (tmp_path / "videos" / "abseiling" / "aaa_000014_000024.mp4").write_bytes(b"x")
    (tmp_path / "videos" / "bbb_000000_000010.mp4").write_bytes(b"x")
    records, classes = read_kinetics_csv(tmp_path / "videos", csv)
    assert classes == ["abseiling", "zumba"]
    assert [r.label for r in records] == [0, 1] and all(r.path.is_file() for r in records)
    csv.write_text("name,id\nx,y\n")
    with pytest.raises(DatasetFormatError, match="expected a header 'label,youtube_id,time_start,time_end,split'"):
        read_kinetics_csv(tmp_path / "videos", csv)


def test_videomae_path_label_lists(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a/x.mp4 3\nb/y z.mp4,0\n/abs/w.mp4 1\n")
    records, classes = read_path_label_list(lst, root=tmp_path / "root")
    assert [(str(r.path), r.label) for r in records] == [
        (str(tmp_path / "root/a/x.mp4"), 3), (str(tmp_path / "root/b/y z.mp4"), 0), ("/abs/w.mp4", 1)]
    assert classes == ["0", "1", "2", "3"]
    lst.write_text("a/x.mp4 walking\n")
    with pytest.raises(DatasetFormatError, match="expected '<path> <integer label>'"):
        read_path_label_list(lst)


def test_ssv2_templates(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Holding something": "1", "Pushing something from left to right": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([
        {"id": "7", "label": "holding a cup", "template": "Holding [something]", "placeholders": ["a cup"]},
        {"id": "9", "label": "pushing pen", "template": "Pushing [something] from left to right", "placeholders": ["pen"]},
    ]))
    records, classes = read_ssv2(tmp_path / "videos", tmp_path / "labels.json", tmp_path / "train.json")
    assert classes == ["Pushing something from left to right", "Holding something"]
    assert [(r.path.name, r.label) for r in records] == [("7.webm", 1), ("9.webm", 0)]
    with pytest.raises(DatasetFormatError, match="missing SSv2 split JSON"):
        read_ssv2(tmp_path, tmp_path / "labels.json", tmp_path / "validation.json")


def test_webm_without_frame_count_header_is_probed_from_its_duration(tmp_path):
    from visualpath.data import probe

    path = write_video(tmp_path / "v.webm", ramp_frames(30), codec="libvpx-vp9")
    assert probe(path).num_frames == 30


def test_a_file_whose_name_is_not_utf8_is_found(tmp_path):
    import os

    from visualpath.data.formats import read_ucf101

    root = tmp_path / "ucf"
    (root / "UCF-101" / "Walk").mkdir(parents=True)
    (root / "ucfTrainTestlist").mkdir()
    name = b"v_Walk_g01_c01_caf\xe9.avi"  # Latin-1, not valid UTF-8
    with open(os.path.join(os.fsencode(root / "UCF-101" / "Walk"), name), "wb") as f:
        f.write(b"x")
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 Walk\n")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_bytes(b"Walk/" + name + b" 1\n")
    records, classes = read_ucf101(root, 1, train=True)
    assert len(records) == 1 and records[0].path.is_file()


def test_ucf101_file_names_with_spaces_parse(tmp_path):
    """A copy renamed by hand (``v_x g96_c01.avi``): the label is the trailing integer after the
    extension, the rest of the line is the path, in both lists."""
    root = _ucf(tmp_path)
    folder = root / "UCF-101" / "ApplyEyeMakeup"
    (folder / "v_ApplyEyeMakeup g96_c01.avi").write_bytes(b"x")
    lists = root / "ucfTrainTestlist"
    (lists / "trainlist01.txt").write_bytes((lists / "trainlist01.txt").read_bytes()
                                            + b"ApplyEyeMakeup/v_ApplyEyeMakeup g96_c01.avi 1\r\n")
    (lists / "testlist01.txt").write_bytes((lists / "testlist01.txt").read_bytes()
                                           + b"ApplyEyeMakeup/v_ApplyEyeMakeup g96_c01.avi\r\n")
    for train in (True, False):
        records, _ = read_ucf101(root, 1, train=train)
        assert records[-1].path == folder / "v_ApplyEyeMakeup g96_c01.avi" and records[-1].label == 0


def test_a_list_entry_that_steps_out_of_the_set_with_dot_dot_is_refused(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("a/x.mp4 3\na/../../../outside.avi 1\n")
    with pytest.raises(DatasetFormatError, match="'a/../../../outside.avi' steps out of a folder"):
        read_path_label_list(lst, root=tmp_path / "root")
    root = tmp_path / "ucf"
    (root / "UCF-101" / "Expand").mkdir(parents=True)
    (root / "ucfTrainTestlist").mkdir()
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 Expand\n")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("Expand/../../../outside.avi 1\n")
    with pytest.raises(DatasetFormatError, match="leads outside UCF-101/"):
        read_ucf101(root, 1, train=True)
