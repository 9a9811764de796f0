__version__ = "0.1.0"

import logging as _logging
# bitsandbytes (optional; peft imports it when installed) warns at import, on CPUs with AVX512-BF16, that the optional
# `kernels` package is missing, then uses its own kernels: that line must not break the CLI's one-line errors or fill
# the notebooks' outputs. Only that message is dropped.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda record: "kernels-community" not in record.getMessage())
