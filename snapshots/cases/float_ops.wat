;; Float arithmetic: SSE scalar ops, plus the NaN-aware min/max and copysign sequences.
(module
  (func (export "f32_ops") (param f32 f32) (result f32)
    (f32.add (local.get 0) (local.get 1))
    (f32.mul (local.get 1))
    (f32.sqrt)
    (f32.min (local.get 0)))
  (func (export "f64_ops") (param f64 f64) (result f64)
    (f64.div (local.get 0) (local.get 1))
    (f64.max (local.get 1))
    (f64.copysign (local.get 0))
    (f64.floor)))
