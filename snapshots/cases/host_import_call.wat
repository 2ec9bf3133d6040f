;; A call to an imported host function: through the import's VMFuncRef in the VM context
;; (code pointer and callee context loaded, then an indirect call).
(module
  (import "env" "log" (func $log (param i32 f64) (result i32)))
  (func (export "call_log") (param i32) (result i32)
    (call $log (local.get 0) (f64.const 1.5))))
