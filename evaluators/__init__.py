"""Evaluators: datasets (COCO / YOLO / VOC / synthetic), box ops, NMS and COCO mAP."""
