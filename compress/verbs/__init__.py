"""The single-folder verbs (`compress export/quantize/prune/evaluate`) and inference on new text (`compress
tag/answer`).
"""
