"""The node's web console at `/ui/`: what integration engineers and radiologists do in a
browser (follow studies, watch running work, upload and predict), served by `dicom-node serve`
itself, behind the same credentials as DICOMweb."""
