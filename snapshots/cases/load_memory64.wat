;; For contrast with `loads`: a 64-bit memory has a dynamic bound (the current length from the
;; memory definition), so its loads are bounds-checked.
(module
  (memory i64 1)
  (func (export "load_i32") (param i64) (result i32)
    (i32.load (local.get 0))))
