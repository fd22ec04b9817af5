package deltacome

import "runtime"

func runtime_GC() { runtime.GC() }
