;; call_indirect: table bounds check, null check and the canonical type-id compare before the
;; call through the funcref.
(module
  (type $binop (func (param i32 i32) (result i32)))
  (table 2 funcref)
  (elem (i32.const 0) $add)
  (func $add (type $binop)
    (i32.add (local.get 0) (local.get 1)))
  (func (export "dispatch") (param i32 i32 i32) (result i32)
    (call_indirect (type $binop) (local.get 1) (local.get 2) (local.get 0))))
