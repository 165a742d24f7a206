"""``fp32_ssm``: the w8a8 graph with each int8 scan replaced by dequantise nodes and the float32 scan.

Everything up to and including the int8 conv1d is w8a8's; the conv's int8 output still feeds x_proj
unchanged. Only the scan and the dequantisation feeding it differ. Since the int8 scan itself
computes ``code * scale`` in float32 and then the same recurrence, this mode asks whether a float32 SSM
changes anything once its inputs are already int8 (the seeds' "Mode 1").
"""

import torch.fx as fx

from mamba_qpass.passes.float_scan import int8_scans, replace_int8_scan


def fp32_ssm(gm: fx.GraphModule) -> fx.GraphModule:
    for scan in int8_scans(gm):
        replace_int8_scan(gm, scan)
    return gm
