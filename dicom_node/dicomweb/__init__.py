"""DICOMweb (PS3.18) over the node's store: QIDO-RS, WADO-RS and STOW-RS under `/dicomweb`."""
