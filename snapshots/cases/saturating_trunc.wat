;; Saturating float-to-int conversions: no traps, NaN gives 0 and out-of-range values clamp.
(module
  (func (export "f32_to_i32_s") (param f32) (result i32)
    (i32.trunc_sat_f32_s (local.get 0)))
  (func (export "f64_to_i64_u") (param f64) (result i64)
    (i64.trunc_sat_f64_u (local.get 0))))
