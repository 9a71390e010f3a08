/** Object detection (SSD): anchors, box coding, matching, NMS, losses, COCO/VOC evaluation, datasets. See docs/detection.md. */
export { ssdAnchors, ssdliteFeatureMapSizes, boxSpecs, SSDLITE_ANCHORS, type Anchors, type SsdAnchorConfig, type BoxSpec } from './anchors.js';
export { iou, iouMatrix, boxArea, centerToCorners, clipBoxes, scaleBoxes, gatherBoxes } from './boxes.js';
export { encodeBoxes, decodeBoxes, TF_BOX_CODER, TORCHVISION_BOX_CODER, type BoxCoder } from './box-coder.js';
export { matchTf, matchSsdTorchvision, matchTorchvision, UNMATCHED, IGNORED } from './matcher.js';
export { nms, batchedNms, multiclassNms, SSDLITE_NMS, type Detections, type MulticlassNmsOptions } from './nms.js';
export { ssdLossTf, ssdLossTorchvision, SSDLITE_HARD_MINER, type SsdLoss, type SsdLossInput, type DetectionTarget } from './losses.js';
export { cocoEvaluate, defaultCocoParams, formatCocoStats, COCO_STAT_NAMES, type CocoEvalResult, type CocoGroundTruth, type CocoDetection } from './coco-eval.js';
export { vocAp, vocClassAp, vocEvaluate, type VocGt, type VocDetection } from './voc-eval.js';
export { loadCocoDetection, loadVocDetection, loadYoloDetection, toCocoGroundTruth, formatSkips, VOC_CLASSES, type DetectionDataset, type DetectionImage, type DetectionBox } from './dataset.js';
export { makeFashionDetect, FASHION_DETECT_DEFAULTS, type FashionDetectOptions } from './fashion-detect.js';
export { fetchDetectionDataset, DETECTION_SOURCES, type DetectionDatasetName } from './fetch-detect.js';
export { postprocessSsd, scoresOf, SSD_STYLES, STYLE_CODER, type SsdStyle, type PostprocessOptions } from './postprocess.js';
export { ssdAugment, randomIouCrop, randomZoomOut, randomHflip, photometricDistort, cropTo, zoomOutTo, hflip, SSD_MEAN_FILL, type ChwImage, type DetectionSample, type SsdAugmentOptions } from './augment.js';
