"""Video and image data: decoding, official dataset formats, sampling, joint transforms,
robust datasets and the built-in synthetic action set.

Datasets return uint8 tensors; normalisation and every prediction target are computed on
the device by the model, never in loader workers.
"""

from visualpath.data.contours import ContourCache, MapCache, masks_to_contour
from visualpath.data.datasets import ImageFolder, VideoDataset
from visualpath.data.decode import (
    TorchCodecVideo,
    Video,
    VideoError,
    VideoInfo,
    default_backend,
    open_video,
    probe,
    read_all_frames,
    read_frames,
)
from visualpath.data.formats import (
    DatasetFormatError,
    VideoRecord,
    read_hmdb51,
    read_kinetics_csv,
    read_path_label_list,
    read_ssv2,
    read_ucf101,
)
from visualpath.data.sampling import segment_clip, strided_clip, multiview_clips, three_crop_boxes
from visualpath.data.synthetic import SyntheticSpec, ensure_synthetic
from visualpath.data.transforms import TrainTransform

__all__ = [
    "ContourCache",
    "MapCache",
    "masks_to_contour",
    "DatasetFormatError",
    "ImageFolder",
    "SyntheticSpec",
    "TrainTransform",
    "TorchCodecVideo",
    "Video",
    "default_backend",
    "open_video",
    "VideoDataset",
    "VideoError",
    "VideoInfo",
    "VideoRecord",
    "ensure_synthetic",
    "probe",
    "read_all_frames",
    "read_frames",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_path_label_list",
    "read_ssv2",
    "read_ucf101",
    "segment_clip",
    "strided_clip",
    "multiview_clips",
    "three_crop_boxes",
]
