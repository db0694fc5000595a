"""The checkpoint reader package (``ms_weightnorm/_checkpoint``) loaded alone, without importing
``ms_weightnorm`` and so without MindSpore: the reader needs only numpy, and the tests that bound
its memory run it in subprocesses with little address space.

``LOAD_READER`` is the source of ``load_reader``, so that a child process can define the same
function from text; this module runs it once for the tests' own process.
"""
import importlib.util
import os
import textwrap

DIRECTORY = os.path.join(os.path.dirname(importlib.util.find_spec("ms_weightnorm").origin), "_checkpoint")

LOAD_READER = textwrap.dedent("""
    def load_reader(directory, name="_reader"):
        import importlib.util, os, sys
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
""")
exec(LOAD_READER)
