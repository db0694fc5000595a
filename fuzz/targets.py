"""Coverage-guided fuzz targets (atheris / libFuzzer) for the checkpoint reader.

    python fuzz/targets.py {zip|pickle|safetensors} [libFuzzer options] [CORPUS_DIR ...]

The property each target checks is in ``properties.py``; ``run.py`` runs all three and prints
executions, coverage and findings. The reader package is instrumented for coverage.
"""
import os
import resource
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports(include=["_fuzzed_reader", "properties"]):
    import properties

# Address space: numpy and safetensors need ~150 MB of it; a bounded reader needs little more.
ADDRESS_SPACE = int(os.environ.get("FUZZ_ADDRESS_SPACE_MB", "1536")) << 20


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in properties.TARGETS:
        sys.exit(f"usage: python {sys.argv[0]} {{{'|'.join(properties.TARGETS)}}} [libFuzzer options] [corpus dirs]")
    target = properties.TARGETS[sys.argv.pop(1)]
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
