"""`wanflow local` and `wanflow demo`: the whole stack on loopback, for people.

`runner.LocalMode` starts the DashScope emulator (unless `DASHSCOPE_BASE_URL` points elsewhere) and a
`wanflow_tools.moto_stack.MotoStack` together and stops them together; `serve` is the long-running `wanflow local`
(endpoint table, notifications on stdout, sweeper, clean Ctrl-C) and `demo` runs one sample image through the
pipeline and checks the video it gets back.
"""
