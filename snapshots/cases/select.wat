;; select: integers use test + cmov; floats, in Cranelift 0.112, a conditional branch around a move.
(module
  (func (export "select_i32") (param i32 i32 i32) (result i32)
    (select (local.get 0) (local.get 1) (local.get 2)))
  (func (export "select_f64") (param f64 f64 i32) (result f64)
    (select (result f64) (local.get 0) (local.get 1) (local.get 2))))
