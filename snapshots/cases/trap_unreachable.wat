;; unreachable: a ud2 with a trap-table entry.
(module
  (func (export "boom")
    (unreachable))
  (func (export "maybe") (param i32) (result i32)
    (if (local.get 0) (then (unreachable)))
    (i32.const 7)))
