;; Division and remainder: the divide-by-zero check, the INT_MIN / -1 overflow check for signed
;; division, and the -1 special case of signed remainder.
(module
  (func (export "div_s") (param i32 i32) (result i32)
    (i32.div_s (local.get 0) (local.get 1)))
  (func (export "div_u") (param i64 i64) (result i64)
    (i64.div_u (local.get 0) (local.get 1)))
  (func (export "rem_s") (param i32 i32) (result i32)
    (i32.rem_s (local.get 0) (local.get 1))))
