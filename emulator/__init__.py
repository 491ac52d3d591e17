"""A local stand-in for one AWS account: moto, plus a small labelled emulation extension.

Nothing here ships in the product. `extension` fills the few APIs moto 5.2.5 lacks that the
guardrail calls; `server` runs it on loopback; `seed` builds a realistic account; `demo` and
`bench` drive the real guardrail engine against it.
"""
