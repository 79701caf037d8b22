"""Making a trained model smaller: pruning (structured and L1) and quantisation (int8, bf16, fp16).
"""
