;; ref.func (the function's VMFuncRef inside the VM context) and table.get / table.set with
;; their bounds checks.
(module
  (table $t 4 funcref)
  (func $target (result i32) (i32.const 42))
  (elem declare func $target)
  (func (export "get") (param i32) (result funcref)
    (table.get $t (local.get 0)))
  (func (export "set_target") (param i32)
    (table.set $t (local.get 0) (ref.func $target))))
