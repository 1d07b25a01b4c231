"""`dicom-node serve`: the assembly of one node process tree (receivers, stability monitor, job
runner, outbox sender, HTTP app with DICOMweb, health, status and metrics).

May import every package of the node but `cli`.
"""
