"""The modalities (images, texts): each implements `tasks.core.modality_api.Modality`, registered by name in
`tasks.modality.registry`; `InputContract` (tasks.modality.input_contract) is what a model built for one takes."""
